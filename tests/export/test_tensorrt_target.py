"""The --target tensorrt rewrite on the tiny fixture: parseable ops only, same detections."""

import onnx
import pytest

pytest.importorskip("tensorflow", reason="export tests need the export extra (tensorflow-cpu)")
pytest.importorskip("tf2onnx", reason="export tests need the export extra (tf2onnx)")
pytest.importorskip("onnx_graphsurgeon", reason="export tests need the export extra (onnx-graphsurgeon)")

from minescan.export.onnx_metadata import read_metadata  # noqa: E402
from minescan.export import compare_detections, run_onnx, run_saved_model, synthetic_tiles  # noqa: E402
from minescan.export.errors import ExportError  # noqa: E402
from minescan.export.tensorrt import rewrite_for_tensorrt  # noqa: E402
from minescan.export.tensorrt_ops import SUPPORTED_OPS, tensorrt_problems  # noqa: E402


@pytest.fixture(scope="module")
def plain(exported) -> onnx.ModelProto:
    return onnx.load(str(exported.onnx_path))


@pytest.fixture(scope="module")
def rewritten(plain):
    return rewrite_for_tensorrt(plain, input_size=(256, 256))


def test_the_plain_export_is_not_parseable(plain):
    problems = tensorrt_problems(plain)
    assert any("Loop" in p and "dynamic length" in p for p in problems)
    assert any("tf_crop_and_resize" in p for p in problems)


def test_rewrite_leaves_no_control_flow_and_only_supported_ops(rewritten):
    model, report = rewritten
    ops = {n.op_type for n in model.graph.node}
    assert not ops & {"Loop", "If", "Scan", "Resize"}
    assert ops <= SUPPORTED_OPS and tensorrt_problems(model) == []
    assert {"RoiAlign", "NonMaxSuppression", "Conv"} <= ops
    assert report.crops_replaced == 1 and report.ops_before["Loop"] == 1 and "Loop" not in report.ops_after
    assert report.nodes_after < report.nodes_before  # the fixed input size folds the shape arithmetic
    onnx.checker.check_model(model)
    assert "no Loop/If left" in report.format()


def test_rewrite_keeps_contract_and_metadata(plain, rewritten):
    model, _ = rewritten
    assert [o.name for o in model.graph.output] == [o.name for o in plain.graph.output]
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [1, 256, 256, 3]
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert read_metadata(model).labels == read_metadata(plain).labels


def test_rewrite_matches_the_plain_export_and_tensorflow(saved_model_dir, exported, rewritten):
    model, _ = rewritten
    tiles = synthetic_tiles(4, (256, 256), seed=4)
    candidate = run_onnx(model.SerializeToString(), tiles)
    for reference in (run_onnx(exported.onnx_path, tiles), run_saved_model(saved_model_dir, tiles)):
        report = compare_detections(reference, candidate, score_floor=0.0)
        assert report.passed and report.compared == 400, report.format()
        assert report.max_box_diff < 1e-5


def test_rewrite_without_a_fixed_size_keeps_it_dynamic(plain):
    model, report = rewrite_for_tensorrt(plain)
    assert report.input_size is None and "Loop" not in {n.op_type for n in model.graph.node}
    tiles = synthetic_tiles(2, (192, 160), seed=5)
    assert compare_detections(run_onnx(plain.SerializeToString(), tiles), run_onnx(model.SerializeToString(), tiles)).passed


def test_an_unsupported_op_is_reported_by_name(plain):
    model = onnx.ModelProto()
    model.CopyFrom(plain)
    relu = next(n for n in model.graph.node if n.op_type == "Relu")
    relu.op_type = "Mish2"
    with pytest.raises(ExportError, match=rf"^TensorRT cannot parse the rewritten model: Mish2 node '{relu.name}'"):
        rewrite_for_tensorrt(model, input_size=(256, 256))


def test_a_size_other_than_a_fixed_input_is_refused(rewritten):
    model, _ = rewritten
    with pytest.raises(ExportError, match="the model takes 256x256 px, not 320x320"):
        rewrite_for_tensorrt(model, input_size=(320, 320))
