"""Triton model repositories (``minescan export-triton``) and freeing a fixed batch (``minescan export --free-batch``).

Each ``config.pbtxt`` is parsed back with ``google.protobuf.text_format`` into
Triton's own ``ModelConfig`` message and checked field by field against the
model it was written for.  The freed models are run with ONNX Runtime and
compared with batch-1 calls of the original.
"""

from __future__ import annotations

import argparse
import hashlib
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from google.protobuf import text_format

from minescan.engine.engine_sidecar import BuildTarget, EngineSidecar, Profile, sidecar_path
from minescan.export.batch_loop import check_tiles, free_batch, verify_free_batch
from minescan.export.errors import ExportError
from minescan.export.triton import INSTALL_HINT, write_triton_repository
from minescan.model.contract import INPUT_NAME, OUTPUT_NAMES
from testkit.square_detector import LABELS, build_square_detector, save_square_detector

mc = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="tritonclient (grpc) is not installed")

TILE = (64, 96)
# (y0, x0, y1, x1, colour) per tile: different counts, places and classes (white -> class 1, blue -> class 2).
RECTANGLES = [
    [(4, 6, 20, 30, (255, 255, 255))],
    [(10, 10, 30, 40, (255, 255, 255)), (40, 60, 60, 90, (0, 0, 255))],
    [(2, 2, 12, 12, (0, 0, 255)), (20, 30, 28, 50, (255, 255, 255)), (44, 70, 62, 94, (250, 250, 250))],
    [(30, 5, 60, 25, (255, 255, 255))],
]


def bright_tiles() -> np.ndarray:
    """Four different dark tiles with the solid bright rectangles of :data:`RECTANGLES`."""
    tiles = np.full((len(RECTANGLES), *TILE, 3), 30, np.uint8)
    for tile, rects in zip(tiles, RECTANGLES):
        for y0, x0, y1, x1, colour in rects:
            tile[y0:y1, x0:x1] = colour
    return tiles


def run(model: onnx.ModelProto | bytes | str, tiles: np.ndarray) -> list[np.ndarray]:
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    return session.run(list(OUTPUT_NAMES), {INPUT_NAME: tiles})


def one_by_one(model: onnx.ModelProto, tiles: np.ndarray) -> list[np.ndarray]:
    calls = [run(model, tile[np.newaxis]) for tile in tiles]
    return [np.concatenate([c[i] for c in calls]) for i in range(len(OUTPUT_NAMES))]


def read_config(path) -> "mc.ModelConfig":
    return text_format.Parse(path.read_text(), mc.ModelConfig())


def triton_dims(value: onnx.ValueInfoProto, batching: bool) -> list[int]:
    """What Triton's dims must be for an ONNX graph input/output: -1 for open sizes, no batch when batching."""
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]
    if not batching:
        return dims
    return dims[1:] or [1]


def check_config_against_graph(config, model: onnx.ModelProto) -> None:
    """Every input and output of ``config`` is the graph's: same names in contract order, types, dims."""
    batching = config.max_batch_size > 0
    onnx_to_triton = {onnx.TensorProto.UINT8: mc.TYPE_UINT8, onnx.TensorProto.FLOAT: mc.TYPE_FP32, onnx.TensorProto.INT32: mc.TYPE_INT32}
    graph = {v.name: v for v in [*model.graph.input, *model.graph.output]}
    assert [i.name for i in config.input] == [INPUT_NAME]
    assert [o.name for o in config.output] == list(OUTPUT_NAMES)
    for entry in [*config.input, *config.output]:
        value = graph[entry.name]
        assert entry.data_type == onnx_to_triton[value.type.tensor_type.elem_type], entry.name
        assert list(entry.dims) == triton_dims(value, batching), entry.name
        scalar = batching and len(value.type.tensor_type.shape.dim) == 1
        assert entry.HasField("reshape") == scalar and list(entry.reshape.shape) == [], entry.name
    # detection_classes are ids, not a classification: no label_filename (inputs have no such field)
    assert [o.label_filename for o in config.output] == [""] * len(OUTPUT_NAMES)


@pytest.fixture
def fixed_batch_model(tmp_path):
    """The square detector with its batch fixed at 1, on disk."""
    return save_square_detector(tmp_path / "squares.onnx", batch=1)


# --- free_batch ---------------------------------------------------------------------------------------


def test_the_freed_square_detector_answers_a_batch_like_four_single_calls():
    original = build_square_detector(batch=1)
    tiles = bright_tiles()
    with pytest.raises(Exception, match="(?i)dimension|shape"):
        run(original, tiles)  # the fixed batch refuses 4 tiles: what freeing is for
    freed = free_batch(original)
    onnx.checker.check_model(freed, full_check=True)
    assert freed.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert [o.type.tensor_type.shape.dim[0].dim_param for o in freed.graph.output] == ["batch"] * 4
    assert [n.op_type for n in freed.graph.node] == ["Shape", "Gather", "Loop"]
    assert list(freed.metadata_props) == list(original.metadata_props)
    assert list(freed.opset_import) == list(original.opset_import)

    boxes, scores, classes, counts = run(freed, tiles)
    for got, want in zip((boxes, scores, classes, counts), one_by_one(original, tiles)):
        assert got.dtype == want.dtype and np.array_equal(got, want)
    # And the known answers: each tile's rectangles, in the detector's score order.
    assert counts.tolist() == [len(r) for r in RECTANGLES]
    height, width = TILE
    for i, rects in enumerate(RECTANGLES):
        found = sorted(tuple(np.round(b * [height, width, height, width]).astype(int)) for b in boxes[i, : len(rects)])
        assert found == sorted((y0, x0, y1, x1) for y0, x0, y1, x1, _ in rects)
        want_classes = sorted(1 if colour[0] >= colour[2] else 2 for *_, colour in rects)
        assert sorted(classes[i, : len(rects)].astype(int).tolist()) == want_classes


def test_free_batch_renames_the_contract_names_inside_nested_subgraphs():
    """A graph that answers only image 0 (like the OD API's) and reads ``input_tensor`` inside an If branch.

    If the branch kept reading the outer ``input_tensor`` (the whole batch), every image would get
    image 0's answer; so would a body output still named like a Loop output.
    """
    from onnx import TensorProto, helper, numpy_helper

    branch = helper.make_graph(
        [
            helper.make_node("Gather", ["input_tensor", "zero"], ["image0"], axis=0),
            helper.make_node("Cast", ["image0"], ["image0_f"], to=TensorProto.FLOAT),
            helper.make_node("ReduceMean", ["image0_f"], ["mean"], keepdims=0),
        ],
        "then",
        [],
        [helper.make_tensor_value_info("mean", TensorProto.FLOAT, [])],
    )
    nodes = [
        helper.make_node("If", ["yes"], ["brightness"], then_branch=branch, else_branch=branch),
        helper.make_node("Div", ["brightness", "full"], ["score"]),
        helper.make_node("Reshape", ["score", "shape_1x1"], ["detection_scores"]),
        helper.make_node("Greater", ["detection_scores", "half"], ["bright"]),  # reads an output
        helper.make_node("Cast", ["bright"], ["bright_f"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["bright_f", "one"], ["detection_classes"]),
        helper.make_node("ReduceSum", ["detection_classes", "axis1"], ["num_detections"], keepdims=0),
        helper.make_node("Unsqueeze", ["detection_scores", "axis2"], ["detection_scores_3d"]),
        helper.make_node("Expand", ["detection_scores_3d", "shape_1x1x4"], ["detection_boxes"]),
    ]
    inits = [
        numpy_helper.from_array(np.array(v, dtype), name)
        for name, v, dtype in [
            ("zero", 0, np.int64), ("yes", True, np.bool_), ("full", 255.0, np.float32), ("half", 0.5, np.float32),
            ("one", 1.0, np.float32), ("shape_1x1", [1, 1], np.int64), ("shape_1x1x4", [1, 1, 4], np.int64),
            ("axis1", [1], np.int64), ("axis2", [2], np.int64),
        ]
    ]
    graph = helper.make_graph(
        nodes,
        "image0_only",
        [helper.make_tensor_value_info("input_tensor", TensorProto.UINT8, ["n", "h", "w", 3])],
        [
            helper.make_tensor_value_info("detection_boxes", TensorProto.FLOAT, [1, 1, 4]),
            helper.make_tensor_value_info("detection_scores", TensorProto.FLOAT, [1, 1]),
            helper.make_tensor_value_info("detection_classes", TensorProto.FLOAT, [1, 1]),
            helper.make_tensor_value_info("num_detections", TensorProto.FLOAT, [1]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    tiles = np.stack([np.full((8, 8, 3), v, np.uint8) for v in (10, 200, 60, 250)])
    assert run(model, tiles)[1].shape == (1, 1)  # the original silently answers image 0 only

    freed = free_batch(model)
    onnx.checker.check_model(freed)
    boxes, scores, classes, counts = run(freed, tiles)
    np.testing.assert_allclose(scores[:, 0], [10 / 255, 200 / 255, 60 / 255, 250 / 255], rtol=1e-6)
    assert classes[:, 0].tolist() == [1.0, 2.0, 1.0, 2.0] and counts.tolist() == [1.0, 2.0, 1.0, 2.0]
    assert boxes.shape == (4, 1, 4)
    verify_free_batch(model, freed, tiles)


@pytest.fixture
def tf_export(request):
    """The tiny fixture SavedModel exported with ``minescan.export.export_onnx`` (conftest's ``exported``); skipped without TF."""
    pytest.importorskip("tensorflow", reason="the export extra (tensorflow-cpu) is not installed")
    pytest.importorskip("tf2onnx", reason="the export extra (tf2onnx) is not installed")
    return request.getfixturevalue("exported")


def test_free_batch_on_the_tf_fixture_matches_per_tile_results(tf_export):
    """The tiny OD-API-like Faster R-CNN (batch fixed at 1 by the exporter, a Loop inside) freed, against batch-1 calls."""
    exported = tf_export
    original = onnx.load(str(exported.onnx_path))
    assert original.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    freed = free_batch(original)
    onnx.checker.check_model(freed)
    body = freed.graph.node[-1].attribute[0].g
    assert any(n.op_type == "Loop" for n in body.node)  # the TF graph's own loop, now nested
    tiles = check_tiles(original)
    assert tiles.shape == (4, 128, 128, 3)
    check = verify_free_batch(original, freed, tiles)
    assert check.tiles == 4 and check.max_box_diff <= 1e-5 and check.max_score_diff <= 1e-5
    # verify_free_batch compares like this; spelled out so a lenient verify cannot hide a difference.
    for got, want in zip(run(freed, tiles), one_by_one(original, tiles)):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_verify_free_batch_refuses_a_model_that_answers_differently(fixed_batch_model):
    original = onnx.load(str(fixed_batch_model))
    other = free_batch(build_square_detector(batch=1, threshold=100.0))  # dims the threshold: other detections
    tiles = bright_tiles()
    tiles[:, 50:60, 0:10] = 150  # a patch only the lower threshold sees
    with pytest.raises(ExportError) as caught:
        verify_free_batch(original, other, tiles)
    assert len(str(caught.value).splitlines()) == 1 and "batch-freed model" in str(caught.value)


# --- write_triton_repository ----------------------------------------------------------------------------


def test_a_fixed_batch_onnx_gets_its_batch_freed_and_a_config_that_matches_it(fixed_batch_model, tmp_path):
    repo = tmp_path / "repo"
    report = write_triton_repository(
        fixed_batch_model, repo, max_batch=4, instances=2, kind="cpu", preferred_batch=[2, 4], max_queue_delay_us=250
    )
    model_dir = repo / "squares"
    assert report.model_dir == model_dir and report.freed_batch is not None
    assert "batch freed" in report.format() and "2 x KIND_CPU" in report.format()
    written = onnx.load(str(model_dir / "1" / "model.onnx"))
    assert written.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"

    config = read_config(model_dir / "config.pbtxt")
    assert config.name == "squares" and config.platform == "onnxruntime_onnx" and config.max_batch_size == 4
    check_config_against_graph(config, written)
    assert list(config.input[0].dims) == [-1, -1, 3]
    assert [list(o.dims) for o in config.output] == [[100, 4], [100], [100], [1]]
    assert list(config.dynamic_batching.preferred_batch_size) == [2, 4]
    assert config.dynamic_batching.max_queue_delay_microseconds == 250
    assert [(g.count, g.kind) for g in config.instance_group] == [(2, mc.ModelInstanceGroup.KIND_CPU)]
    assert (model_dir / "labels.txt").read_text() == "".join(f"{LABELS[i]}\n" for i in sorted(LABELS))
    assert "label_filename" in (model_dir / "config.pbtxt").read_text().split("\nname: ")[0]  # said in the header comment

    # What Triton will run: a batch of 4 different tiles answered exactly like 4 single calls of the original.
    tiles = bright_tiles()
    original = onnx.load(str(fixed_batch_model))
    for got, want in zip(run(str(model_dir / "1" / "model.onnx"), tiles), one_by_one(original, tiles)):
        assert np.array_equal(got, want)


def test_a_dynamic_batch_onnx_is_copied_unchanged_with_types_from_the_graph(tmp_path):
    model = build_square_detector(size=(64, 96))
    # detection_classes as int32: the config must follow the graph, not assume float.
    producer = next(n for n in model.graph.node if "detection_classes" in n.output)
    producer.output[list(producer.output).index("detection_classes")] = "classes_float"
    model.graph.node.append(onnx.helper.make_node("Cast", ["classes_float"], ["detection_classes"], to=onnx.TensorProto.INT32))
    next(o for o in model.graph.output if o.name == "detection_classes").type.tensor_type.elem_type = onnx.TensorProto.INT32
    onnx.checker.check_model(model)
    source = tmp_path / "int_classes.onnx"
    onnx.save(model, str(source))

    report = write_triton_repository(source, tmp_path / "repo", name="squares-int", kind="gpu")
    model_dir = tmp_path / "repo" / "squares-int"
    assert report.freed_batch is None
    assert (model_dir / "1" / "model.onnx").read_bytes() == source.read_bytes()
    config = read_config(model_dir / "config.pbtxt")
    assert config.name == "squares-int" and config.max_batch_size == 8
    check_config_against_graph(config, model)
    assert list(config.input[0].dims) == [64, 96, 3]  # fixed H and W
    assert config.output[2].data_type == mc.TYPE_INT32
    assert config.HasField("dynamic_batching") and not config.dynamic_batching.preferred_batch_size
    assert config.dynamic_batching.max_queue_delay_microseconds == 100
    assert [(g.count, g.kind) for g in config.instance_group] == [(1, mc.ModelInstanceGroup.KIND_GPU)]


@pytest.mark.parametrize("batch", [1, None])
def test_max_batch_0_keeps_the_full_shapes_and_the_graph(tmp_path, batch):
    source = save_square_detector(tmp_path / "squares.onnx", batch=batch)
    report = write_triton_repository(source, tmp_path / "repo", max_batch=0)
    model_dir = tmp_path / "repo" / "squares"
    assert report.freed_batch is None and report.max_queue_delay_us is None
    assert (model_dir / "1" / "model.onnx").read_bytes() == source.read_bytes()
    config = read_config(model_dir / "config.pbtxt")
    assert config.max_batch_size == 0
    check_config_against_graph(config, onnx.load(str(source)))
    n = batch or -1
    assert list(config.input[0].dims) == [n, -1, -1, 3]
    assert [list(o.dims) for o in config.output] == [[n, 100, 4], [n, 100], [n, 100], [n]]
    assert not config.HasField("dynamic_batching")
    assert [(g.count, g.kind) for g in config.instance_group] == [(1, mc.ModelInstanceGroup.KIND_CPU)]


def write_plan(folder, profile: Profile, metadata=None, name="detector.plan"):
    """A dummy engine file and a sidecar as ``minescan build`` writes it (EngineSidecar.to_json beside the engine)."""
    plan = folder / name
    plan.write_bytes(b"not a TensorRT engine: nothing runs it, only the config is written from its sidecar")
    sidecar = EngineSidecar(
        engine_sha256=hashlib.sha256(plan.read_bytes()).hexdigest(),
        target=BuildTarget(tensorrt_version="10.3.0", gpu_name="NVIDIA L4", compute_capability="8.9"),
        onnx_sha256="0" * 64,
        profile=profile,
        metadata=metadata if metadata is not None else {p.key: p.value for p in build_square_detector().metadata_props},
    )
    sidecar_path(plan).write_text(sidecar.to_json())
    return plan


def test_a_plan_with_its_sidecar_gives_tensorrt_plan_and_the_sidecar_dims(tmp_path):
    """Only the config is checked: TensorRT is not installed here, the plan file is a dummy nothing runs."""
    plan = write_plan(tmp_path, Profile(INPUT_NAME, (1, 512, 640, 3), (8, 512, 640, 3), (16, 512, 640, 3)))
    report = write_triton_repository(plan, tmp_path / "repo", max_batch=16, preferred_batch=[8])
    model_dir = tmp_path / "repo" / "detector"
    assert report.platform == "tensorrt_plan" and "NVIDIA L4" in report.format()
    assert (model_dir / "1" / "model.plan").read_bytes() == plan.read_bytes()
    assert not (model_dir / "1" / "model.onnx").exists()
    config = read_config(model_dir / "config.pbtxt")
    assert config.name == "detector" and config.platform == "tensorrt_plan" and config.max_batch_size == 16
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [(INPUT_NAME, mc.TYPE_UINT8, [512, 640, 3])]
    assert [(o.name, o.data_type, list(o.dims)) for o in config.output] == [
        ("detection_boxes", mc.TYPE_FP32, [-1, 4]),
        ("detection_scores", mc.TYPE_FP32, [-1]),
        ("detection_classes", mc.TYPE_FP32, [-1]),
        ("num_detections", mc.TYPE_FP32, [1]),
    ]
    assert config.output[3].HasField("reshape") and list(config.output[3].reshape.shape) == []
    assert list(config.dynamic_batching.preferred_batch_size) == [8]
    assert [(g.count, g.kind) for g in config.instance_group] == [(1, mc.ModelInstanceGroup.KIND_GPU)]
    assert (model_dir / "labels.txt").read_text() == "red_square\nblue_square\n"

    write_triton_repository(plan, tmp_path / "full", max_batch=0)
    config = read_config(tmp_path / "full" / "detector" / "config.pbtxt")
    assert list(config.input[0].dims) == [-1, 512, 640, 3]
    assert [list(o.dims) for o in config.output] == [[-1, -1, 4], [-1, -1], [-1, -1], [-1]]


def test_plans_that_triton_could_not_batch_or_trust_are_refused_in_one_line(tmp_path):
    fixed = write_plan(tmp_path, Profile(INPUT_NAME, (1, 640, 640, 3), (1, 640, 640, 3), (1, 640, 640, 3)), name="fixed.plan")
    ranged = write_plan(tmp_path, Profile(INPUT_NAME, (1, 640, 640, 3), (8, 640, 640, 3), (16, 640, 640, 3)), name="ranged.plan")
    cases = [
        (lambda: write_triton_repository(fixed, tmp_path / "r1"), "minescan export --free-batch"),
        (lambda: write_triton_repository(ranged, tmp_path / "r2", max_batch=32), "up to 16"),
        (lambda: write_triton_repository(ranged, tmp_path / "r3", kind="cpu"), "GPU only"),
    ]
    for call, words in cases:
        with pytest.raises(ExportError) as caught:
            call()
        assert len(str(caught.value).splitlines()) == 1 and words in str(caught.value)
    write_triton_repository(fixed, tmp_path / "r4", max_batch=0)  # without batching it is fine: [1, 640, 640, 3]
    assert list(read_config(tmp_path / "r4" / "fixed" / "config.pbtxt").input[0].dims) == [1, 640, 640, 3]

    ranged.write_bytes(b"another engine")  # the sidecar no longer vouches for the file
    with pytest.raises(ExportError, match="SHA-256"):
        write_triton_repository(ranged, tmp_path / "r5")
    sidecar_path(fixed).unlink()
    with pytest.raises(ExportError, match="no sidecar"):
        write_triton_repository(fixed, tmp_path / "r6", max_batch=0)
    assert not any((tmp_path / f"r{i}").exists() for i in (1, 2, 3, 5, 6))


def _outside_contract(tmp_path):
    model = build_square_detector()
    model.graph.input[0].name = "images"
    for node in model.graph.node:
        node.input[:] = ["images" if i == INPUT_NAME else i for i in node.input]
    path = tmp_path / "images.onnx"
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize(
    "make, options, words",
    [
        (lambda p: p / "nothere.onnx", {}, "no such model file"),
        (lambda p: (p / "junk.onnx").write_bytes(b"\x00\x01 this is not protobuf" * 9) and p / "junk.onnx", {}, "not a readable ONNX model"),
        (_outside_contract, {}, "has no input 'input_tensor'"),
        (lambda p: save_square_detector(p / "m.onnx"), {"max_batch": -1}, "max batch must be a whole number >= 0"),
        (lambda p: save_square_detector(p / "m.onnx"), {"max_batch": 4, "preferred_batch": [8]}, "must lie in 1..4"),
        (lambda p: save_square_detector(p / "m.onnx"), {"max_batch": 0, "preferred_batch": [1]}, "cannot go with max batch 0"),
        (lambda p: save_square_detector(p / "m.onnx"), {"instances": 0}, "instances must be"),
        (lambda p: save_square_detector(p / "m.onnx"), {"name": "../escape"}, "model name '../escape'"),
        (lambda p: save_square_detector(p / "m.onnx", batch=2), {}, "batch is fixed at 2"),
    ],
    ids=["missing", "not-onnx", "outside-contract", "negative-max-batch", "preferred-too-big", "preferred-without-batching",
         "no-instances", "bad-name", "batch-fixed-at-2"],
)
def test_bad_inputs_are_one_line_errors_and_write_nothing(tmp_path, make, options, words):
    source = make(tmp_path)
    with pytest.raises(ExportError) as caught:
        write_triton_repository(source, tmp_path / "repo", **options)
    message = str(caught.value)
    assert len(message.splitlines()) == 1 and words in message, message
    assert not (tmp_path / "repo").exists()


def test_without_tritonclient_the_error_names_the_install(fixed_batch_model, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tritonclient.grpc", None)
    monkeypatch.setitem(sys.modules, "tritonclient.grpc.model_config_pb2", None)
    with pytest.raises(ExportError, match="tritonclient") as caught:
        write_triton_repository(fixed_batch_model, tmp_path / "repo")
    assert INSTALL_HINT in str(caught.value) and not (tmp_path / "repo").exists()


# --- the command line -----------------------------------------------------------------------------------


@pytest.fixture
def cli(monkeypatch):
    """``minescan.cli.main``, with ``export-triton`` added to its parser if minescan.cli does not register it yet."""
    import minescan.cli as cli_module
    from minescan.cli import export_triton

    build = cli_module.build_parser

    def with_export_triton() -> argparse.ArgumentParser:
        parser = build()
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        if "export-triton" not in sub.choices:
            export_triton.add_parser(sub)
        return parser

    monkeypatch.setattr(cli_module, "build_parser", with_export_triton)
    return cli_module.main


def test_export_triton_command_writes_the_repository_and_reports(cli, fixed_batch_model, tmp_path, capsys):
    repo = tmp_path / "repo"
    argv = ["export-triton", str(fixed_batch_model), "--repo", str(repo), "--name", "mines", "--max-batch", "4",
            "--instances", "3", "--kind", "gpu", "--max-queue-delay-us", "500", "--preferred-batch", "2,4"]
    assert cli(argv) == 0
    out = capsys.readouterr().out
    assert "wrote Triton model 'mines' (onnxruntime_onnx)" in out and "batch freed" in out and "3 x KIND_GPU" in out
    config = read_config(repo / "mines" / "config.pbtxt")
    assert config.name == "mines" and config.max_batch_size == 4
    assert list(config.dynamic_batching.preferred_batch_size) == [2, 4]
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    assert [(g.count, g.kind) for g in config.instance_group] == [(3, mc.ModelInstanceGroup.KIND_GPU)]
    check_config_against_graph(config, onnx.load(str(repo / "mines" / "1" / "model.onnx")))


def test_export_triton_command_errors_are_one_line(cli, fixed_batch_model, tmp_path, capsys):
    assert cli(["export-triton", str(fixed_batch_model), "--repo", str(tmp_path / "repo"), "--max-batch", "-1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("minescan: error: max batch must be a whole number >= 0")
    assert cli(["export-triton", str(tmp_path / "nothere.onnx"), "--repo", str(tmp_path / "repo")]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [f"minescan: error: {tmp_path / 'nothere.onnx'}: no such model file"]
    assert not (tmp_path / "repo").exists()


def test_export_free_batch_loops_a_fixed_batch_graph_and_refuses_tensorrt(fixed_batch_model, tmp_path, capsys):
    from minescan.cli import main

    out = tmp_path / "freed.onnx"
    assert main(["export", str(fixed_batch_model), "--out", str(out), "--free-batch"]) == 0
    printed = capsys.readouterr().out
    assert "--free-batch: freed batch agrees with batch-1 calls on 4 tiles" in printed and f"wrote {out}" in printed
    freed = onnx.load(str(out))
    assert freed.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert json.loads({p.key: p.value for p in freed.metadata_props}["minescan.labels"]) == {"1": "red_square", "2": "blue_square"}
    tiles = bright_tiles()
    for got, want in zip(run(str(out), tiles), one_by_one(onnx.load(str(fixed_batch_model)), tiles)):
        assert np.array_equal(got, want)

    refused = tmp_path / "trt.onnx"
    assert main(["export", str(fixed_batch_model), "--out", str(refused), "--free-batch", "--target", "tensorrt"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["minescan: error: --free-batch makes an ONNX Runtime model (for Triton's batching); it cannot go with --target tensorrt"]
    assert not refused.exists()


def test_a_trt_engine_file_is_a_tensorrt_plan_too(tmp_path):
    """``.trt`` is a common engine suffix: Triton gets it as model.plan, not as an ONNX model."""
    plan = write_plan(tmp_path, Profile(INPUT_NAME, (1, 640, 640, 3), (8, 640, 640, 3), (16, 640, 640, 3)), name="detector.trt")
    report = write_triton_repository(plan, tmp_path / "repo", max_batch=16, preferred_batch=[8])
    assert report.platform == "tensorrt_plan"
    assert (tmp_path / "repo" / "detector" / "1" / "model.plan").read_bytes() == plan.read_bytes()
