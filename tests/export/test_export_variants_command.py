"""``minescan export --target/--precision/--calibration`` as users run it, on the tiny fixture."""


import onnx
import pytest

pytest.importorskip("tensorflow", reason="the export extra (tensorflow-cpu) is not installed")
pytest.importorskip("tf2onnx", reason="the export extra (tf2onnx) is not installed")
pytest.importorskip("onnx_graphsurgeon", reason="the export extra (onnx-graphsurgeon) is not installed")

from minescan.cli import main  # noqa: E402
from minescan.engine.metadata import read_metadata  # noqa: E402
from minescan.export.tensorrt_ops import tensorrt_problems  # noqa: E402


def _build(path) -> dict:
    return dict(read_metadata(onnx.load(str(path))).build)


def test_tensorrt_target_is_parseable_and_verified(saved_model_dir, tmp_path, capsys):
    out = tmp_path / "model.trt.onnx"
    assert main(["export", str(saved_model_dir), "--out", str(out), "--target", "tensorrt", "--verify"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("parity PASS") == 2  # TF vs ONNX, then the rewrite vs the plain ONNX
    assert "tensorrt rewrite vs plain ONNX" in printed and "input 640x640" in printed
    model = onnx.load(str(out))
    assert tensorrt_problems(model) == [] and "Loop" not in {n.op_type for n in model.graph.node}
    assert read_metadata(model).input_size == (640, 640)
    assert read_metadata(model).labels == {1: "illegal_mining", 2: "legal_mining"}
    assert _build(out) == {"target": "tensorrt", "precision": "fp32", "input_size": [640, 640], "calibration": None}


def test_int8_tensorrt_calibrated_on_scenes(demo_saved_model, mining_scenes, tmp_path, capsys):
    out = tmp_path / "model.int8.onnx"
    argv = ["export", str(demo_saved_model), "--out", str(out), "--target", "tensorrt", "--precision", "int8",
            "--calibration", str(mining_scenes), "--input-size", "256", "--verify"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"calibrated on 16 tiles from the scenes in {mining_scenes}" in printed
    assert "int8 vs fp32 PASS: recall" in printed and "with score >= 0.5" in printed and "ms per tile" in printed
    model = onnx.load(str(out))
    assert "QuantizeLinear" in {n.op_type for n in model.graph.node} and tensorrt_problems(model) == []
    assert _build(out)["calibration"].startswith("16 tiles from the scenes")


def test_int8_of_random_weights_fails_verify_and_leaves_nothing(saved_model_dir, tmp_path, capsys):
    # A random-init detector's scores are noise that INT8 rounding reorders: --verify must say so, not pass.
    out = tmp_path / "model.int8.onnx"
    argv = ["export", str(saved_model_dir), "--out", str(out), "--precision", "int8", "--input-size", "256", "--verify"]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "int8 vs fp32 FAIL" in captured.out
    assert captured.err.strip() == f"minescan: error: --verify: int8 disagrees with fp32 beyond tolerance for {out}"


def test_fp16_onnx_target(demo_saved_model, mining_scenes, tmp_path, capsys):
    out = tmp_path / "model.fp16.onnx"
    argv = ["export", str(demo_saved_model), "--out", str(out), "--precision", "fp16", "--calibration", str(mining_scenes), "--verify"]
    assert main(argv) == 0
    assert "fp16 vs fp32 PASS: recall 100.0%" in capsys.readouterr().out
    assert _build(out) == {"target": "onnx", "precision": "fp16", "input_size": None, "calibration": None}


def test_missing_calibration_folder_is_one_line(saved_model_dir, tmp_path, capsys):
    argv = ["export", str(saved_model_dir), "--out", str(tmp_path / "m.onnx"), "--calibration", str(tmp_path / "none")]
    assert main(argv) == 1
    assert capsys.readouterr().err.strip() == f"minescan: error: --calibration {tmp_path / 'none'}: folder not found"
    assert not (tmp_path / "m.onnx").exists()


def test_verify_also_compares_on_scene_tiles_when_given(demo_saved_model, mining_scenes, tmp_path, capsys):
    # A trained detector finds next to nothing on synthetic noise; scene tiles give it sites to find.
    argv = ["export", str(demo_saved_model), "--out", str(tmp_path / "m.onnx"), "--verify", "--calibration", str(mining_scenes)]
    assert main(argv) == 0
    parity = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("parity PASS"))
    assert "on 28 tiles" in parity  # 4 synthetic + 24 cut from the scenes
    assert int(parity.split()[2].split("/")[1]) >= 10  # detections compared
