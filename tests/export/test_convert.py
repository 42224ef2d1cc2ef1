import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

tf = pytest.importorskip("tensorflow", reason="export tests need the export extra (tensorflow-cpu)")
pytest.importorskip("tf2onnx", reason="export tests need the export extra (tf2onnx)")

from minescan.export.onnx_metadata import read_metadata  # noqa: E402
from minescan.model.metadata import Recipe  # noqa: E402
from minescan.export import DEFAULT_PREPROCESSING, ExportError, export_onnx  # noqa: E402
from minescan.export.saved_model import saved_model_sha256  # noqa: E402

CONTRACT = ["detection_boxes", "detection_scores", "detection_classes", "num_detections"]


def _shape(value: onnx.ValueInfoProto) -> list:
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in value.type.tensor_type.shape.dim]


def test_exactly_the_contract_outputs_with_their_types(exported):
    model = onnx.load(str(exported.onnx_path))
    assert [o.name for o in model.graph.output] == CONTRACT
    assert {o.type.tensor_type.elem_type for o in model.graph.output} == {onnx.TensorProto.FLOAT}
    assert [_shape(o) for o in model.graph.output] == [[1, 100, 4], [1, 100], [1, 100], [1]]
    (image,) = model.graph.input
    assert image.name == "input_tensor" and image.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    shape = _shape(image)
    assert shape[0] == 1 and shape[3] == 3 and all(isinstance(d, str) for d in shape[1:3])
    assert exported.dropped_outputs == (
        "detection_anchor_indices",
        "detection_multiclass_scores",
        "raw_detection_boxes",
        "raw_detection_scores",
    )


def test_graph_is_pure_onnx_at_the_requested_opset(exported):
    model = onnx.load(str(exported.onnx_path))
    onnx.checker.check_model(model)
    assert {(o.domain or "ai.onnx", o.version) for o in model.opset_import} >= {("ai.onnx", 17)}
    assert {n.domain for n in model.graph.node} <= {"", "ai.onnx"}
    ops = {n.op_type for n in model.graph.node}
    assert {"NonMaxSuppression", "Conv", "Loop"} <= ops  # Loop: tf2onnx's CropAndResize


def test_metadata_round_trips(exported, saved_model_dir):
    meta = read_metadata(onnx.load(str(exported.onnx_path)))
    assert meta.labels == {1: "illegal_mining", 2: "legal_mining"}
    assert meta.input_size is None  # the fixture takes any H and W
    assert meta.recipe == Recipe(bands=None, gain=2.5, offset=0, scale=10000)
    assert meta.source_sha256 == saved_model_sha256(saved_model_dir)
    assert len(meta.source_sha256) == 64
    assert set(meta.tool_versions) == {"tensorflow", "tf2onnx", "onnx", "onnxruntime", "minescan"}
    assert meta.tool_versions["tensorflow"] == tf.__version__
    assert meta == exported.metadata


def test_batch_stays_fixed_at_one_because_the_graph_takes_image_zero(exported):
    # The OD API graph slices image 0 and returns [1, ...]: ONNX Runtime would
    # silently answer a batch of 2 with one result, so the exporter keeps batch 1.
    assert not exported.dynamic_batch
    assert exported.batch_note == "the graph returns 1 result(s) for a batch of 2"
    assert "batch fixed at 1" in exported.format()


def test_write_is_atomic_and_leaves_no_temporary_files(exported):
    assert sorted(p.name for p in exported.onnx_path.parent.iterdir()) == ["model.onnx"]
    assert exported.size_bytes == exported.onnx_path.stat().st_size


def test_explicit_labels_and_preprocessing_override(saved_model_dir, tmp_path):
    out = tmp_path / "sub" / "custom.onnx"
    report = export_onnx(saved_model_dir, out, labels={1: "pit", 2: "heap"}, preprocessing={"bands": [4, 3, 2]})
    meta = read_metadata(onnx.load(str(out)))
    assert meta.labels == {1: "pit", 2: "heap"}
    assert meta.recipe == Recipe.from_json({**DEFAULT_PREPROCESSING, "bands": [4, 3, 2]}) and meta.recipe.bands == (4, 3, 2)
    assert report.metadata == meta


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"preprocessing": {"gian": 2.5}}, "unknown preprocessing key 'gian'"),
        ({"preprocessing": {"bands": [0, 1]}}, "preprocessing 'bands' must be null or a list of 1-based band numbers, got [0, 1]"),
        ({"labels": {0: "background"}}, "labels must map class ids >= 1 to names, got 0: 'background'"),
    ],
)
def test_bad_options_fail_before_any_conversion(saved_model_dir, tmp_path, kwargs, message):
    with pytest.raises(ExportError, match=message.replace("[", r"\[").replace("]", r"\]")):
        export_onnx(saved_model_dir, tmp_path / "x.onnx", **kwargs)
    assert not list(tmp_path.iterdir())


def _save(path: Path, outputs, signature_name: str = "serving_default", dtype=tf.uint8) -> Path:
    module = tf.Module()
    module.scale = tf.Variable(1.0)

    @tf.function(input_signature=[tf.TensorSpec([1, None, None, 3], dtype, name="input_tensor")])
    def serve(input_tensor):
        level = tf.reduce_mean(tf.cast(input_tensor, tf.float32)) * module.scale
        return outputs(level)

    tf.saved_model.save(module, str(path), signatures={signature_name: serve})
    return path


def _contract_outputs(level, **overrides):
    outputs = {
        "detection_boxes": tf.fill([1, 5, 4], level),
        "detection_scores": tf.fill([1, 5], level),
        "detection_classes": tf.ones([1, 5]),
        "num_detections": tf.constant([5.0]),
    }
    outputs.update(overrides)
    return {k: v for k, v in outputs.items() if v is not None}


@pytest.mark.parametrize(
    ("builder", "message"),
    [
        (lambda p: _save(p, lambda x: _contract_outputs(x, num_detections=None)), "has no output 'num_detections'"),
        (
            lambda p: _save(p, lambda x: _contract_outputs(x, detection_classes=tf.ones([1, 5], tf.int32))),
            "output 'detection_classes' is int32, expected float32",
        ),
        (lambda p: _save(p, _contract_outputs, dtype=tf.float32), "input 'input_tensor' is float32, expected uint8"),
        (lambda p: _save(p, _contract_outputs, signature_name="detect"), "has no 'serving_default' signature (signatures: detect)"),
    ],
    ids=["missing-output", "int-classes", "float-input", "no-serving-default"],
)
def test_signature_outside_the_contract_is_one_line_naming_it(tmp_path, builder, message):
    saved = builder(tmp_path / "saved_model")
    (tmp_path / "label_map.pbtxt").write_text("item { id: 1 name: 'a' }")
    with pytest.raises(ExportError) as caught:
        export_onnx(saved, tmp_path / "out.onnx")
    text = str(caught.value)
    assert message in text and str(saved) in text and "\n" not in text
    assert not (tmp_path / "out.onnx").exists()


def test_corrupted_saved_model_is_one_line(saved_model_dir, tmp_path):
    broken = tmp_path / "saved_model"
    shutil.copytree(saved_model_dir, broken)
    (broken / "saved_model.pb").write_bytes(b"\x08\x01not a protobuf")
    with pytest.raises(ExportError, match=rf"^cannot load SavedModel {broken}: ") as caught:
        export_onnx(broken, tmp_path / "out.onnx", labels={1: "a"})
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p: p, "SavedModel directory {p} does not exist"),
        (lambda p: p.mkdir() or p, "{p} is not a SavedModel directory: no saved_model.pb or saved_model.pbtxt"),
    ],
)
def test_missing_saved_model_is_named(tmp_path, setup, message):
    path = setup(tmp_path / "nothing")
    with pytest.raises(ExportError) as caught:
        export_onnx(path, tmp_path / "out.onnx", labels={1: "a"})
    assert str(caught.value) == message.format(p=path)


def test_missing_label_map_asks_for_labels(saved_model_dir, tmp_path):
    lonely = tmp_path / "a" / "b" / "saved_model"
    shutil.copytree(saved_model_dir, lonely)
    with pytest.raises(ExportError, match="no label_map.pbtxt in .*saved_model or the two directories above it; pass labels"):
        export_onnx(lonely, tmp_path / "out.onnx")


def test_without_tensorflow_import_works_and_export_says_how_to_install(tmp_path):
    script = (
        "import sys\n"
        "sys.modules['tensorflow'] = None\n"  # makes `import tensorflow` fail like a missing package
        "import minescan.export as e\n"
        "try:\n"
        f"    e.export_onnx({str(tmp_path)!r}, 'x.onnx', labels={{1: 'a'}})\n"
        "except e.ExportError as exc:\n"
        "    print(exc)\n"
    )
    (tmp_path / "saved_model.pb").write_bytes(b"")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.startswith("tensorflow is not installed (")
    assert result.stdout.strip().endswith("install the export extra: pip install 'minescan[export]'")


def test_saved_model_digest_changes_with_the_weights(saved_model_dir, tmp_path):
    copy = tmp_path / "saved_model"
    shutil.copytree(saved_model_dir, copy)
    assert saved_model_sha256(copy) == saved_model_sha256(saved_model_dir)
    variables = next((copy / "variables").glob("*.data-*"))
    data = bytearray(variables.read_bytes())
    data[-1] ^= 0xFF
    variables.write_bytes(bytes(data))
    assert saved_model_sha256(copy) != saved_model_sha256(saved_model_dir)
