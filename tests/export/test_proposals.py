"""The proposal budget (``minescan export --max-proposals K``): the first stage of a two-stage detector keeping K proposals.

On the shipped demo detector (ONNX only, no TensorFlow needed) and on a small hand-built
two-NMS graph whose proposal count also lives in static Pad/Reshape constants, as in OD API
exports that pad the proposals to exactly first_stage_max_proposals.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from minescan.cli import main
from minescan.export.errors import ExportError
from minescan.export.onnx_metadata import read_metadata
from minescan.export.proposals import build_budget, find_proposals, limit_proposals, proposal_recall

DEMO = Path(__file__).resolve().parents[2] / "minescan" / "models" / "demo_detector.onnx"
DEMO_PROPOSALS = 100  # the demo detector's tiny architecture: first_stage_max_proposals 100


@pytest.fixture(scope="module")
def demo() -> onnx.ModelProto:
    return onnx.load(str(DEMO))


@pytest.fixture(scope="module")
def mining_tiles(tmp_path_factory) -> np.ndarray:
    """Two 640 px tiles of a fresh synthetic mining scene (a seed never used in training), rendered with the demo's recipe."""
    from minescan.export.calibration import calibration_tiles
    from minescan.synthetic.mining import MiningSpec, write_mining_scene

    folder = tmp_path_factory.mktemp("proposal-scenes")
    write_mining_scene(folder / "scene.tif", MiningSpec(width=1280, height=640, seed=41, illegal_density=8.0, legal_density=3.0))
    return calibration_tiles(folder, (640, 640), read_metadata(onnx.load(str(DEMO), load_external_data=False)).recipe, count=2)


def _outputs(model: onnx.ModelProto, tiles: np.ndarray) -> list[list[np.ndarray]]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return [session.run(None, {"input_tensor": tile[np.newaxis]}) for tile in tiles]


def test_demo_detector_proposal_count_is_found(demo):
    found = find_proposals(demo)
    assert found.count == DEMO_PROPOSALS
    assert len(found.later_nms) == 1 and found.nms not in found.later_nms
    assert len(found.sites) == 1  # tf2onnx left the count dynamic after the first-stage NMS
    assert "first stage keeps 100 proposals" in found.format()


def test_full_budget_equals_the_original_exactly(demo, mining_tiles):
    rewritten, _ = build_budget(demo, None, DEMO_PROPOSALS)
    for before, after in zip(_outputs(demo, mining_tiles), _outputs(rewritten, mining_tiles)):
        for a, b in zip(before, after):
            assert np.array_equal(a, b)


def test_budget_of_50_runs_records_itself_and_keeps_most_detections(demo, mining_tiles, tmp_path):
    out = tmp_path / "k50.onnx"
    rewritten, found = build_budget(demo, out, 50)
    onnx.checker.check_model(onnx.load(str(out)))
    build = read_metadata(onnx.load(str(out))).build
    assert build["max_proposals"] == 50 and build["proposals_configured"] == DEMO_PROPOSALS
    # The first-stage NMS reads 50; the second stage's NMS (which shared tf2onnx's constant 100) still reads 100.
    constants = {i.name: numpy_helper.to_array(i) for i in rewritten.graph.initializer}
    nms = {n.name: int(constants[n.input[2]]) for n in rewritten.graph.node if n.op_type == "NonMaxSuppression"}
    assert nms == {found.nms: 50, found.later_nms[0]: DEMO_PROPOSALS}
    recall = proposal_recall(DEMO, out, mining_tiles, 50, found.count)
    assert recall.compared > 0, "the full model finds nothing on the mining tiles: nothing measured"
    # Measured: all 10 of the full model's detections kept, none new (a subset); 0.9 leaves room for ORT versions.
    assert recall.recall >= 0.9 and recall.extra == 0
    assert "proposal budget 50/100: recall" in recall.format()


@pytest.mark.parametrize("bad", [0, -1, DEMO_PROPOSALS + 1, 300])
def test_a_budget_out_of_range_is_refused_in_one_line(demo, bad):
    with pytest.raises(ExportError) as caught:
        limit_proposals(demo, bad, where="demo_detector.onnx")
    message = str(caught.value)
    assert "\n" not in message and f"--max-proposals {bad}" in message and "choose 1..100" in message


def test_the_command_line_budget_on_an_onnx_detector(tmp_path, capsys):
    out = tmp_path / "k25.onnx"
    assert main(["export", str(DEMO), "--out", str(out), "--max-proposals", "25", "--verify"]) == 0
    printed = capsys.readouterr().out
    assert "--max-proposals 25: first stage keeps 100 proposals" in printed and "proposal budget 25/100: recall" in printed
    assert json.loads(next(p.value for p in onnx.load(str(out)).metadata_props if p.key == "minescan.build"))["max_proposals"] == 25
    assert main(["export", str(DEMO), "--out", str(tmp_path / "bad.onnx"), "--max-proposals", "101"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "out of range" in err[0] and str(DEMO) in err[0]
    assert not (tmp_path / "bad.onnx").exists()


# A hand-built two-stage graph: NMS -> gather -> Pad to P -> Reshape [1, P, 4] -> second NMS (sharing the constant P).
P = 8


def _two_stage(extra: str | None = None) -> onnx.ModelProto:
    ints = lambda name, values: numpy_helper.from_array(np.array(values, np.int64), name)  # noqa: E731
    inits = [
        ints("P", [P]), ints("zero2", [0, 0]), ints("zero1", [0]), ints("two", [2]), ints("one", [1]), ints("shape", [1, P, 4]),
        ints("axis0", [0]), numpy_helper.from_array(np.array([0.5], np.float32), "iou"),
    ]
    nodes = [
        helper.make_node("NonMaxSuppression", ["boxes", "scores", "P", "iou"], ["sel"], name="first_nms"),
        helper.make_node("Gather", ["sel", "two"], ["idx2"], name="col", axis=1),
        helper.make_node("Squeeze", ["idx2", "one"], ["idx"], name="squeeze_idx"),
        helper.make_node("Squeeze", ["boxes", "axis0"], ["boxes0"], name="squeeze_boxes"),
        helper.make_node("Gather", ["boxes0", "idx"], ["props"], name="gather_props", axis=0),
        helper.make_node("Shape", ["props"], ["props_shape"], name="props_shape"),
        helper.make_node("Slice", ["props_shape", "zero1", "one"], ["count"], name="count"),
        helper.make_node("Sub", ["P", "count"], ["missing"], name="missing"),
        helper.make_node("Concat", ["zero2", "missing", "zero1"], ["pads"], name="pads", axis=0),
        helper.make_node("Pad", ["props", "pads"], ["padded"], name="pad"),
        helper.make_node("Reshape", ["padded", "shape"], ["proposals"], name="reshape"),
        helper.make_node("ReduceSum", ["proposals", "two"], ["s"], name="score2", keepdims=0),
        helper.make_node("Unsqueeze", ["s", "one"], ["scores2"], name="unsq"),
        helper.make_node("NonMaxSuppression", ["proposals", "scores2", "P", "iou"], ["detections"], name="second_nms"),
    ]
    if extra == "mul":  # a constant equal to P used as a factor: not a size this rewrite understands
        nodes.insert(10, helper.make_node("Mul", ["count", "P"], ["weird"], name="weird"))
        nodes.append(helper.make_node("Add", ["detections", "weird"], ["detections_w"], name="use_weird"))
    outputs = [helper.make_tensor_value_info("proposals", TensorProto.FLOAT, [1, P, 4]),
               helper.make_tensor_value_info("detections_w" if extra == "mul" else "detections", TensorProto.INT64, [None, 3])]
    graph = helper.make_graph(nodes, "two_stage",
                              [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 32, 4]),
                               helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 1, 32])],
                              outputs, initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_static_echoes_of_the_count_are_rewritten_and_the_second_stage_keeps_its_own():
    model = _two_stage()
    onnx.checker.check_model(model)
    found = find_proposals(model)
    assert found.count == P and found.nms == "first_nms"
    assert {(s.op, s.index) for s in found.sites} == {("NonMaxSuppression", 2), ("Sub", 0), ("Reshape", 1)}
    rewritten, _ = limit_proposals(model, 3)
    onnx.checker.check_model(rewritten)
    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 1, (1, 32, 2, 2))
    boxes = np.concatenate([corners.min(2), corners.max(2)], -1).astype(np.float32)
    scores = rng.uniform(0, 1, (1, 1, 32)).astype(np.float32)
    run = lambda m: ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(  # noqa: E731
        None, {"boxes": boxes, "scores": scores})
    full, budget = run(model), run(rewritten)
    assert full[0].shape == (1, P, 4) and budget[0].shape == (1, 3, 4)
    assert np.array_equal(budget[0], full[0][:, :3])  # the 3 proposals of highest score, as before
    assert rewritten.graph.output[0].type.tensor_type.shape.dim[1].dim_param == "proposals"
    second = next(n for n in rewritten.graph.node if n.name == "second_nms")
    assert second.input[2] == "P"  # the second stage's own limit is untouched


def test_an_ambiguous_count_is_refused_naming_what_was_found():
    with pytest.raises(ExportError, match=r"constant P = \[8\] holds the proposal count 8 as input 1 of Mul weird"):
        find_proposals(_two_stage("mul"), where="two_stage.onnx")
    single = _two_stage()
    del single.graph.node[-3:]
    single.graph.output[1].name = "proposals"
    del single.graph.output[1]
    with pytest.raises(ExportError, match="found 1 NonMaxSuppression node"):
        find_proposals(single)


def test_the_command_line_budget_on_a_saved_model_export(saved_model_dir, tmp_path, capsys):
    """SavedModel -> ONNX (TF parity checked) -> budget of 30, recall reported; the second stage's NMS keeps 100."""
    pytest.importorskip("tensorflow", reason="the export extra (tensorflow-cpu) is not installed")
    pytest.importorskip("tf2onnx", reason="the export extra (tf2onnx) is not installed")
    out = tmp_path / "k30.onnx"
    assert main(["export", str(saved_model_dir), "--out", str(out), "--max-proposals", "30", "--verify"]) == 0
    printed = capsys.readouterr().out
    assert "parity PASS" in printed and "proposal budget 30/100: recall" in printed
    model = onnx.load(str(out))
    assert read_metadata(model).build["max_proposals"] == 30
    constants = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    assert sorted(int(constants[n.input[2]]) for n in model.graph.node if n.op_type == "NonMaxSuppression") == [30, 100]
