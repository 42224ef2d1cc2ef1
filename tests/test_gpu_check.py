"""benchmarks/gpu_check.py's plumbing, on the CPU: a tiny scene, the demo detector, FP32 and FP16, batch 1.

The GPU run itself (benchmarks/gpu_check.sh on the GPU machine) cannot run here;
this proves that the driver makes the FP16 variant with the project's tool, runs
``minescan bench`` per model and precision, probes a backend, and writes the JSON
the GPU run will bring back, with the keys its readers expect.  About 5 s.
"""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_driver_writes_its_json_on_the_cpu(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--out", str(out), "--work", str(work),
         "--backend", "cpu", "--models", "demo", "--batches", "1", "--scene-size", "640", "--probe-backends", "cpu",
         "--budget-s", "120"],
        capture_output=True, text=True, timeout=180, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert {"machine", "scene", "models", "probes", "runs", "total_s", "backend", "batches"} <= set(report)
    assert {"date_utc", "host", "cpu", "gpu", "onnxruntime", "native"} <= set(report["machine"])
    assert {"version", "providers", "installed", "conflict", "preload_dlls"} <= set(report["machine"]["onnxruntime"])
    assert set(report["models"]) == {"demo-fp32", "demo-fp16"}
    assert "fp16:" in report["models"]["demo-fp16"]["made_by"]  # made by minescan.export.variants
    assert report["probes"]["cpu"]["backend"] == "onnxruntime-cpu"
    for key in ("demo-fp32", "demo-fp16"):
        run = report["runs"][key]
        assert run["rc"] == 0 and run["backend_line"] == "backend: onnxruntime-cpu"
        assert run["bench"]["results"][0]["batch"] == 1
        (row,) = run["summary"]
        assert {"pipeline_s", "model_only_s", "tiles_per_s", "model_only_tiles_per_s", "pipeline_over_model_only"} <= set(row)
        assert row["tiles"] > 0 and row["pipeline_s"] > 0 and row["model_only_s"] > 0
