"""``minescan export`` of Keras tile classifiers: .keras files and SavedModels to ONNX classifiers, verified, INT8.

The models are built here, tiny (32 px windows): a small CNN with its own Rescaling layer, trained for a few
seconds to tell bright windows from dark ones so its answers are decisive, and a keras.applications
MobileNetV2 (alpha 0.35, random weights, batch-norm statistics measured on windows so its output depends on
its input).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

pytest.importorskip("tensorflow", reason="the export extra (tensorflow-cpu) is not installed")
pytest.importorskip("tf2onnx", reason="the export extra (tf2onnx) is not installed")
keras = pytest.importorskip("keras", reason="the export extra (keras) is not installed")

from minescan.cli import main  # noqa: E402
from minescan.engine import load_detector  # noqa: E402
from minescan.export.detections import synthetic_tiles  # noqa: E402
from minescan.export.errors import ExportError  # noqa: E402
from minescan.export.keras_classifier import export_keras_classifier, load_keras_classifier  # noqa: E402
from minescan.export.onnx_metadata import read_metadata  # noqa: E402
from minescan.export.verify import compare_probabilities, run_classifier  # noqa: E402
from minescan.model.metadata import MetadataError, parse_metadata  # noqa: E402

SIZE = 32


def _bright_windows(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Windows of one flat level plus texture, dark (label 0) or bright (label 1), well apart."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, count)
    levels = np.where(labels == 1, rng.uniform(110, 240, count), rng.uniform(10, 70, count))
    texture = synthetic_tiles(count, (SIZE, SIZE), seed=seed).astype(np.float32) - 128
    return np.clip(levels[:, None, None, None] + 0.3 * texture, 0, 255).astype(np.uint8), labels


@pytest.fixture(scope="module")
def cnn_keras(tmp_path_factory) -> Path:
    """A small CNN taking 0-255 (its own Rescaling layer), trained to call bright windows 'mining'."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((SIZE, SIZE, 3)),
        keras.layers.Rescaling(1 / 255),
        keras.layers.Conv2D(16, 3, activation="relu"),
        keras.layers.Conv2D(32, 3, strides=2, activation="relu"),
        keras.layers.Conv2D(64, 3, strides=2, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(2, activation="softmax"),
    ])
    windows, labels = _bright_windows(256, seed=1)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    model.fit(windows.astype(np.float32), labels, epochs=6, batch_size=32, verbose=0)
    path = tmp_path_factory.mktemp("cnn") / "model.keras"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def mobilenet_keras(tmp_path_factory) -> Path:
    """A keras.applications MobileNetV2 (random weights) wrapped in a functional model."""
    keras.utils.set_random_seed(0)
    base = keras.applications.MobileNetV2(input_shape=(SIZE, SIZE, 3), alpha=0.35, weights=None, classes=2)
    for layer in base.layers:  # measure batch-norm statistics on windows (x / 127.5 - 1) in one training-mode call
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0
    base(synthetic_tiles(32, (SIZE, SIZE), seed=5).astype(np.float32) / 127.5 - 1, training=True)
    image = keras.Input((SIZE, SIZE, 3))
    path = tmp_path_factory.mktemp("mobilenet") / "model.keras"
    keras.Model(image, base(image)).save(path)
    return path


def test_keras_classifier_exports_scans_as_a_classifier_and_matches_keras(cnn_keras, tmp_path, capsys):
    out = tmp_path / "classifier.onnx"
    assert main(["export", str(cnn_keras), "--out", str(out), "--labels", "other,mining", "--verify"]) == 0
    printed = capsys.readouterr().out
    assert "preprocessing none" in printed and "Rescaling layer 'rescaling'" in printed  # auto: the model rescales itself
    assert "TF vs ONNX Runtime parity PASS" in printed and printed.rstrip().endswith(f"verified; wrote {out}")

    detector = load_detector(out)
    assert detector.task == "classifier"
    meta = detector.metadata
    assert meta.task == "classifier" and meta.labels == {1: "other", 2: "mining"} and meta.input_size == (SIZE, SIZE)
    assert meta.recipe.gain is not None and meta.tool_versions["keras"] == keras.__version__
    graph = onnx.load(str(out)).graph
    assert [o.name for o in graph.output] == ["probabilities"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"

    windows, labels = _bright_windows(12, seed=7)
    reference = keras.models.load_model(cnn_keras).predict(windows.astype(np.float32), verbose=0)
    onnx_probabilities = detector.classify(windows)
    parity = compare_probabilities(reference, onnx_probabilities)
    assert parity.passed and parity.max_diff < 1e-4 and parity.agreeing == 12
    assert (onnx_probabilities.argmax(axis=1) == labels).mean() >= 0.9  # it learnt something: the check can fail


def test_auto_bakes_mobilenet_v2_preprocessing(mobilenet_keras, tmp_path):
    out = tmp_path / "mobilenet.onnx"
    report = export_keras_classifier(mobilenet_keras, out, labels="other,mining")
    assert report.preprocess == "mobilenet_v2" and "MobileNetV2 'mobilenetv2_0.35_32'" in report.preprocess_reason
    assert "preprocessing mobilenet_v2: x / 127.5 - 1" in report.format()
    windows = synthetic_tiles(8, (SIZE, SIZE), seed=3)
    model = keras.models.load_model(mobilenet_keras)
    expected = model.predict(keras.applications.mobilenet_v2.preprocess_input(windows.astype(np.float32)), verbose=0)
    got = run_classifier(out, windows)
    assert np.abs(got - expected).max() < 1e-4
    unscaled = model.predict(windows.astype(np.float32), verbose=0)  # what preprocess none would have fed it
    assert np.abs(unscaled - expected).max() > 1e-2 and np.ptp(expected[:, 1]) > 0.05  # the output depends on it


def test_preprocess_unit_is_baked_when_asked(mobilenet_keras, tmp_path):
    loaded = load_keras_classifier(mobilenet_keras, preprocess="unit")
    windows = synthetic_tiles(4, (SIZE, SIZE), seed=4)
    expected = keras.models.load_model(mobilenet_keras).predict(windows.astype(np.float32) / 255, verbose=0)
    assert loaded.preprocess == "unit" and np.abs(loaded.probabilities(windows) - expected).max() < 1e-5


def test_a_rank_4_output_is_refused_in_one_line(tmp_path, capsys):
    image = keras.Input((SIZE, SIZE, 3))
    path = tmp_path / "segmenter.keras"
    keras.Model(image, keras.layers.Conv2D(2, 1, activation="softmax")(image)).save(path)
    assert main(["export", str(path), "--out", str(tmp_path / "m.onnx"), "--labels", "a,b"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"minescan: error: {path}: the model's output has shape [?, 32, 32, 2]; a tile classifier returns "
                   "[batch, classes] probabilities (rank 2)"]
    assert not (tmp_path / "m.onnx").exists()
    four_bands = keras.Input((SIZE, SIZE, 4))
    keras.Model(four_bands, keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(four_bands))).save(path)
    with pytest.raises(ExportError, match=r"input has shape \[\?, 32, 32, 4\]; a tile classifier takes \[batch, H, W, 3\]"):
        export_keras_classifier(path, tmp_path / "m.onnx", labels="a,b")


def test_logits_are_refused_as_not_probabilities(tmp_path):
    keras.utils.set_random_seed(0)
    image = keras.Input((SIZE, SIZE, 3))  # no rescaling and no softmax: logits of 0-255 input, far outside [0, 1]
    path = tmp_path / "logits.keras"
    keras.Model(image, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(image)))).save(path)
    with pytest.raises(ExportError, match=r"not probabilities; end it in a softmax \(or one sigmoid\)"):
        export_keras_classifier(path, tmp_path / "m.onnx", labels="a,b")
    assert not (tmp_path / "m.onnx").exists()


def test_labels_are_required_and_must_fit_the_classes(cnn_keras, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert main(["export", str(cnn_keras), "--out", str(out)]) == 1
    assert "give --labels NAME,NAME" in capsys.readouterr().err
    with pytest.raises(ExportError, match=r"the model has 2 output\(s\), so --labels needs 2 names.*got 3"):
        export_keras_classifier(cnn_keras, out, labels="a,b,c")
    assert not out.exists()


def test_a_model_that_takes_any_size_needs_a_window(tmp_path):
    image = keras.Input((None, None, 3))
    features = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(keras.layers.Rescaling(1 / 255)(image)))
    path = tmp_path / "any.keras"
    keras.Model(image, keras.layers.Dense(1, activation="sigmoid")(features)).save(path)
    with pytest.raises(ExportError, match=r"takes images of any size \(\[\?, \?, \?, 3\]\); give --window N"):
        load_keras_classifier(path)
    report = export_keras_classifier(path, tmp_path / "any.onnx", labels="mining", window=48)  # one sigmoid: one name
    assert report.metadata.input_size == (48, 48) and report.metadata.labels == {1: "mining"} and report.classes == 1


def test_constants_a_layer_holds_outside_its_variables_are_kept(tmp_path):
    # Normalization(mean, variance) holds them as constant tensors (EfficientNetV2 has one): tf2onnx leaves
    # them as graph inputs nothing could feed unless the export folds them in.
    image = keras.Input((SIZE, SIZE, 3))
    normalised = keras.layers.Normalization(mean=[120.0, 110.0, 100.0], variance=[900.0, 1600.0, 2500.0])(image)
    features = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(normalised))
    path = tmp_path / "normalised.keras"
    keras.Model(image, keras.layers.Dense(2, activation="softmax")(features)).save(path)
    out = tmp_path / "normalised.onnx"
    export_keras_classifier(path, out, labels="other,mining")
    assert [v.name for v in onnx.load(str(out)).graph.input] == ["input_tensor"]
    windows = synthetic_tiles(4, (SIZE, SIZE), seed=6)
    expected = keras.models.load_model(path).predict(windows.astype(np.float32), verbose=0)
    assert np.abs(run_classifier(out, windows) - expected).max() < 1e-4


def test_a_failed_verify_leaves_the_existing_model_alone(cnn_keras, tmp_path, capsys, monkeypatch):
    import minescan.export.keras_classifier as module

    out = tmp_path / "classifier.onnx"
    out.write_bytes(b"the good model")

    def disagreeing(reference, candidate, **options):
        return compare_probabilities(reference, 1 - candidate, **options)

    monkeypatch.setattr(module, "compare_probabilities", disagreeing)
    assert main(["export", str(cnn_keras), "--out", str(out), "--labels", "other,mining", "--verify"]) == 1
    captured = capsys.readouterr()
    assert "TF vs ONNX Runtime parity FAIL" in captured.out
    assert "ONNX Runtime disagrees with TensorFlow" in captured.err and "nothing written" in captured.err
    assert out.read_bytes() == b"the good model" and list(tmp_path.iterdir()) == [out]


def test_int8_classifier_passes_its_gate_and_is_smaller(cnn_keras, mining_scenes, tmp_path, capsys):
    fp32, int8 = tmp_path / "fp32.onnx", tmp_path / "int8.onnx"
    common = ["--labels", "other,mining", "--normalisation", "stretch", "--calibration", str(mining_scenes), "--verify"]
    assert main(["export", str(cnn_keras), "--out", str(fp32), *common]) == 0
    assert main(["export", str(cnn_keras), "--out", str(int8), *common, "--precision", "int8"]) == 0
    printed = capsys.readouterr().out
    assert "int8 vs fp32 PASS" in printed and "from the scenes in" in printed
    assert int8.stat().st_size < 0.6 * fp32.stat().st_size
    model = onnx.load(str(int8))
    assert any(n.op_type == "QuantizeLinear" for n in model.graph.node)
    meta = read_metadata(model)
    assert meta.task == "classifier" and meta.build["precision"] == "int8" and meta.recipe.normalisation.kind == "stretch"
    assert meta.input_statistics is not None and load_detector(int8).task == "classifier"
    windows = synthetic_tiles(16, (SIZE, SIZE), seed=9)
    agreement = compare_probabilities(run_classifier(fp32, windows), run_classifier(int8, windows), tolerance=0.1)
    assert agreement.passed and agreement.max_diff > 0  # quantized: close, not identical


def test_saved_model_directory_exports_too(cnn_keras, tmp_path, capsys):
    saved = tmp_path / "saved"
    keras.models.load_model(cnn_keras).export(str(saved))
    capsys.readouterr()
    out = tmp_path / "from_saved.onnx"
    assert main(["export", str(saved), "--out", str(out), "--labels", "other,mining", "--verify"]) == 0
    printed = capsys.readouterr().out
    assert "tile classifier: windows 32x32" in printed and "parity PASS" in printed
    windows = synthetic_tiles(6, (SIZE, SIZE), seed=2)
    expected = keras.models.load_model(cnn_keras).predict(windows.astype(np.float32), verbose=0)
    assert np.abs(run_classifier(out, windows) - expected).max() < 1e-4
    assert load_detector(out).metadata.task == "classifier"


def test_an_onnx_classifier_from_elsewhere_gets_its_task_recorded(tmp_path, capsys):
    from testkit.bright_classifier import build_bright_classifier

    bare = build_bright_classifier(size=64)
    del bare.metadata_props[:]
    source = tmp_path / "bare.onnx"
    onnx.save(bare, str(source))
    out = tmp_path / "ready.onnx"
    assert main(["export", str(source), "--out", str(out)]) == 1
    assert "give --labels NAME,NAME" in capsys.readouterr().err
    assert main(["export", str(source), "--out", str(out), "--labels", "other,mining"]) == 0
    assert "(classifier) with its metadata completed" in capsys.readouterr().out
    meta = read_metadata(onnx.load(str(out)))
    assert meta.task == "classifier" and meta.labels == {1: "other", 2: "mining"} and meta.input_size == (64, 64)
    assert onnx.load(str(out)).graph == bare.graph


def test_classifier_options_are_refused_for_the_other_kind(cnn_keras, tmp_path, capsys):
    assert main(["export", str(cnn_keras), "--out", str(tmp_path / "m.onnx"), "--labels", "a,b", "--drop-parts", "0.7"]) == 1
    assert "--drop-parts is for detectors" in capsys.readouterr().err


def test_compare_probabilities_reports_drift_and_decisions():
    reference = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8]])
    same = compare_probabilities(reference, reference + 1e-5)
    assert same.passed and same.agreeing == 3 and same.max_diff == pytest.approx(1e-5)
    flipped = compare_probabilities(reference, np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]]), tolerance=0.5)
    assert not flipped.passed and flipped.agreeing == 2 and "FAIL" in flipped.format()
    sigmoid = compare_probabilities(np.array([[0.49], [0.9]]), np.array([[0.51], [0.9]]), tolerance=0.1)
    assert sigmoid.agreeing == 1 and not sigmoid.passed and "p >= 0.5" in sigmoid.format()
    with pytest.raises(ValueError):
        compare_probabilities(reference, reference[:2])


def test_task_metadata_round_trips_and_refuses_nonsense():
    assert parse_metadata({"minescan.task": json.dumps("classifier")}).task == "classifier"
    assert parse_metadata({}).task is None
    with pytest.raises(MetadataError, match="'minescan.task' must be one of detector, classifier"):
        parse_metadata({"minescan.task": json.dumps("segmenter")})
