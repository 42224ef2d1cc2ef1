"""The demo detector's training script: a few dozen steps lower the loss and save a SavedModel (~20 s)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("tensorflow")

SCRIPT = Path(__file__).resolve().parents[1] / "training" / "train_demo_detector.py"


def test_short_training_run_lowers_the_loss_and_saves_the_model(tmp_path):
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(tmp_path), "--steps", "30", "--scenes", "2", "--scene-size", "1024",
         "--log-every", "10", "--check-decrease"],
        capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "loss decreased" in run.stdout
    assert (tmp_path / "saved_model" / "saved_model.pb").is_file()
    assert "legal_mining" in (tmp_path / "label_map.pbtxt").read_text()
    log = json.loads((tmp_path / "training_log.json").read_text())
    assert (log["seed"], log["steps"], [row["step"] for row in log["losses"]]) == (0, 30, [10, 20, 30])
