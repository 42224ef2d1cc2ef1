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


@pytest.fixture(scope="module")
def pre_nms_top_k(tmp_path_factory):
    """The tiny fixture with a first-stage pre-NMS top-k of 6000 (9216 anchors at 512x512), and its plain export."""
    from minescan.export import export_onnx
    from testkit.fixture_model import build_fixture_model

    saved_model = build_fixture_model(tmp_path_factory.mktemp("pre_nms"), backbone="tiny", seed=0, first_stage_pre_nms_top_k=6000)
    return saved_model, export_onnx(saved_model, tmp_path_factory.mktemp("pre_nms_onnx") / "model.onnx").onnx_path


def test_a_pre_nms_top_k_of_6000_is_split_and_the_export_matches_tensorflow(pre_nms_top_k, tmp_path, capsys):
    from minescan.cli import main
    from minescan.export.topk import constant_ks
    from minescan.export.verify import verify_export

    saved_model, plain_path = pre_nms_top_k
    assert any("TopK" in p and "K must be an initializer below 3840" in p for p in tensorrt_problems(onnx.load(str(plain_path))))
    out = tmp_path / "model.trt.onnx"
    argv = ["export", str(saved_model), "--out", str(out), "--target", "tensorrt", "--input-size", "512", "--verify"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.count("parity PASS") == 2 and "1 TopK(s) with K >= 3840 split into rounds" in printed
    model = onnx.load(str(out))
    assert tensorrt_problems(model) == [] and sorted(constant_ks(model).values()) == [3000, 3000]
    parity = verify_export(saved_model, out, tile_count=2, seed=8, score_floor=0.0)
    assert parity.passed and parity.compared == 200 and parity.max_box_diff < 1e-5, parity.format()
    _assert_same_top_k(onnx.load(str(plain_path)), model, synthetic_tiles(1, (512, 512), seed=10))


def test_a_pre_nms_top_k_on_any_input_size_is_bounded_then_split(pre_nms_top_k):
    saved_model, plain_path = pre_nms_top_k
    model, report = rewrite_for_tensorrt(onnx.load(str(plain_path)))  # K = min(6000, anchors): bounded by 6000
    assert report.topk_bounded == 1 and report.topk_split == 1 and tensorrt_problems(model) == []
    # 256x256: 2304 anchors (fewer than 6000: every anchor, padded); 512x512: 9216 (top 6000 of them).
    for size in ((256, 256), (512, 512)):
        tiles = synthetic_tiles(1, size, seed=9)
        parity = compare_detections(run_saved_model(saved_model, tiles), run_onnx(model.SerializeToString(), tiles), score_floor=0.0)
        assert parity.passed and parity.compared == 100 and parity.max_box_diff < 1e-5, parity.format()
        _assert_same_top_k(onnx.load(str(plain_path)), model, tiles)


def _assert_same_top_k(plain: onnx.ModelProto, rewritten: onnx.ModelProto, tiles) -> None:
    """The pre-NMS TopK's own outputs (kept under their names by the rewrite) are bit-equal in both graphs.

    Detections alone would not show an off-by-one at a round boundary: the first-stage NMS drops a
    duplicated anchor and the 6000th anchor rarely survives it.
    """
    import numpy as np

    from minescan.export.detections import open_session

    topk = next(n for n in plain.graph.node if n.op_type == "TopK")
    results = []
    for model in (plain, rewritten):
        probe = onnx.ModelProto()
        probe.CopyFrom(model)
        probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(name) for name in topk.output)
        session = open_session(probe.SerializeToString())
        results.append([session.run(list(topk.output), {"input_tensor": tile[None]}) for tile in tiles])
    anchors = (tiles.shape[1] // 16) * (tiles.shape[2] // 16) * 9  # stride 16, 9 anchors a cell (the tiny fixture)
    for want, got in zip(*results):
        for w, g in zip(want, got):
            assert w.shape == g.shape == (min(6000, anchors),)
            assert w.dtype == g.dtype and np.array_equal(w, g)
