"""``minescan export --target/--precision/--calibration`` as users run it, on the tiny fixture."""

import re

import onnx
import pytest

pytest.importorskip("tensorflow", reason="the export extra (tensorflow-cpu) is not installed")
pytest.importorskip("tf2onnx", reason="the export extra (tf2onnx) is not installed")
pytest.importorskip("onnx_graphsurgeon", reason="the export extra (onnx-graphsurgeon) is not installed")

from minescan.cli import main  # noqa: E402
from minescan.export.onnx_metadata import read_metadata  # noqa: E402
from minescan.export.tensorrt_ops import tensorrt_problems  # noqa: E402


def _build(path) -> dict:
    return dict(read_metadata(onnx.load(str(path))).build)


def test_tensorrt_target_uses_only_supported_ops_and_is_verified(saved_model_dir, tmp_path, capsys):
    # What can be checked without TensorRT: no Loop/If, every op in TensorRT 10's published ONNX
    # support matrix (minescan/export/tensorrt_ops.py), and parity with TF and the plain export. A real
    # parse needs TensorRT (tests/test_tensorrt.py builds engines where it is installed).
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


DEMO_RECIPE = ("--bands", "3,2,1", "--normalisation", "stretch")  # how the demo detector was trained


def test_int8_tensorrt_calibrated_on_scenes(demo_saved_model, mining_scenes, tmp_path, capsys):
    out = tmp_path / "model.int8.onnx"
    argv = ["export", str(demo_saved_model), *DEMO_RECIPE, "--out", str(out), "--target", "tensorrt", "--precision", "int8",
            "--calibration", str(mining_scenes), "--input-size", "256", "--verify"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    # as many pixels as 16 tiles of 640 px: 100 tiles of 256 px (minescan.export.calibration.tiles_for), or as many
    # as the scenes hold
    found = re.search(rf"calibrated on (\d+) tiles from the scenes in {re.escape(str(mining_scenes))}", printed)
    assert found and 16 < int(found.group(1)) <= 100, printed
    assert "int8 vs fp32 PASS: recall" in printed and "with score >= 0.5" in printed and "ms per tile" in printed
    model = onnx.load(str(out))
    assert "QuantizeLinear" in {n.op_type for n in model.graph.node} and tensorrt_problems(model) == []
    assert _build(out)["calibration"].startswith(f"{found.group(1)} tiles from the scenes")


def test_int8_that_disagrees_fails_verify_and_leaves_nothing(demo_saved_model, mining_scenes, tmp_path, capsys, monkeypatch):
    # An INT8 model whose scores went wrong (Softmax turned Sigmoid after quantizing, as a broken
    # quantizer might leave it): --verify must refuse it with one line, and the model already at
    # --out (from an earlier export) stays as it was.
    import minescan.export.variants as variants

    quantize = variants.quantize_int8

    def broken_quantize(*args, **kwargs):
        model = quantize(*args, **kwargs)
        softmax = next(n for n in model.graph.node if n.op_type == "Softmax")
        softmax.op_type = "Sigmoid"
        del softmax.attribute[:]
        return model

    monkeypatch.setattr(variants, "quantize_int8", broken_quantize)
    out = tmp_path / "model.int8.onnx"
    out.write_bytes(b"the model of yesterday's export")
    argv = ["export", str(demo_saved_model), *DEMO_RECIPE, "--out", str(out), "--precision", "int8", "--calibration", str(mining_scenes), "--verify"]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "int8 vs fp32 FAIL" in captured.out
    assert captured.err.strip() == f"minescan: error: --verify: int8 disagrees with fp32 beyond tolerance for {out}; nothing written"
    assert out.read_bytes() == b"the model of yesterday's export" and list(tmp_path.iterdir()) == [out]


def test_fp16_onnx_target(demo_saved_model, mining_scenes, tmp_path, capsys):
    out = tmp_path / "model.fp16.onnx"
    argv = ["export", str(demo_saved_model), *DEMO_RECIPE, "--out", str(out), "--precision", "fp16", "--calibration", str(mining_scenes), "--verify"]
    assert main(argv) == 0
    assert "fp16 vs fp32 PASS: recall 100.0%" in capsys.readouterr().out
    assert _build(out) == {"target": "onnx", "precision": "fp16", "input_size": None, "calibration": None}


def test_missing_calibration_folder_is_one_line(saved_model_dir, tmp_path, capsys):
    argv = ["export", str(saved_model_dir), "--out", str(tmp_path / "m.onnx"), "--calibration", str(tmp_path / "none")]
    assert main(argv) == 1
    assert capsys.readouterr().err.strip() == f"minescan: error: calibration folder {tmp_path / 'none'}: not found"
    assert not (tmp_path / "m.onnx").exists()


def test_verify_also_compares_on_scene_tiles_when_given(demo_saved_model, mining_scenes, tmp_path, capsys):
    # A trained detector finds next to nothing on synthetic noise; scene tiles give it sites to find.
    argv = ["export", str(demo_saved_model), *DEMO_RECIPE, "--out", str(tmp_path / "m.onnx"), "--verify", "--calibration", str(mining_scenes)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    parity = next(line for line in printed.splitlines() if line.startswith("parity PASS"))
    assert printed.rstrip().endswith(f"verified; wrote {tmp_path / 'm.onnx'}") and list(tmp_path.iterdir()) == [tmp_path / "m.onnx"]
    # 4 synthetic + 2 x 2 tiles from each 1024 px scene, cut at the scan's 640 px since the model takes any size
    assert "on 12 tiles" in parity
    assert int(parity.split()[2].split("/")[1]) >= 10  # detections compared


def test_int8_beyond_the_gate_falls_back_to_fp32_near_the_outputs(demo_saved_model, mining_scenes, tmp_path, capsys, monkeypatch):
    # The first INT8 build is made to fail the gate (its score drift reported as 0.5): the export
    # rebuilds with the last 2 quantizable ops in FP32, verifies that one, and records it.
    import dataclasses as dc

    import minescan.export.agreement as agreement

    real, calls = agreement.compare_precision, []

    def first_fails(*args, **kwargs):
        report = real(*args, **kwargs)
        calls.append(report)
        if len(calls) == 1:
            return dc.replace(report, parity=dc.replace(report.parity, max_score_diff=0.5))
        return report

    monkeypatch.setattr(agreement, "compare_precision", first_fails)
    out = tmp_path / "model.int8.onnx"
    argv = ["export", str(demo_saved_model), *DEMO_RECIPE, "--out", str(out), "--precision", "int8",
            "--calibration", str(mining_scenes), "--input-size", "256", "--verify"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "int8 vs fp32 FAIL" in printed and "retrying int8 with the last 2 quantizable ops in FP32" in printed
    assert printed.count("int8 vs fp32 PASS") == 1 and len(calls) == 2
    assert _build(out)["fp32_tail"] == 2
    model = onnx.load(str(out))
    convs = [n for n in model.graph.node if n.op_type in ("Conv", "MatMul")]
    dequantized = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    assert convs[-1].input[1] not in dequantized  # the op nearest the outputs kept its FP32 weights
