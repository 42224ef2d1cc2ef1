"""Shared, built-once fixtures for the export tests.

Building the tiny Faster R-CNN and converting it take a few seconds each, so
both happen once per session; tests that need them import TensorFlow through
``pytest.importorskip`` first, so without the export extra they are skipped.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TF's C++ start-up chatter out of test output


@pytest.fixture(scope="session")
def saved_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny fixture SavedModel, with label_map.pbtxt beside it."""
    from testkit.fixture_model import build_fixture_model

    return build_fixture_model(tmp_path_factory.mktemp("fixture"), backbone="tiny", seed=0)


@pytest.fixture(scope="session")
def exported(saved_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The ExportReport of converting the tiny fixture with default options."""
    from minescan.export import export_onnx

    return export_onnx(saved_model_dir, tmp_path_factory.mktemp("onnx") / "model.onnx")


DEMO_SAVED_MODEL = Path(__file__).resolve().parents[2] / "training" / "demo_detector" / "saved_model"


@pytest.fixture(scope="session")
def demo_saved_model() -> Path:
    """The trained demo detector's SavedModel (training/demo_detector, made by training/train_demo_detector.py).

    FP16/INT8 agreement is measured on it: on random weights every score is noise
    and any rounding reorders them, so agreement there says nothing.
    """
    assert (DEMO_SAVED_MODEL / "saved_model.pb").is_file(), f"{DEMO_SAVED_MODEL} is missing from the checkout"
    return DEMO_SAVED_MODEL


@pytest.fixture(scope="session")
def mining_scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of two small synthetic mining scenes (seeds never used in training), for calibration and --verify."""
    from minescan.synthetic.mining import MiningSpec, write_mining_scene

    folder = tmp_path_factory.mktemp("mining-scenes")
    for seed in (31, 32):
        write_mining_scene(folder / f"scene_{seed}.tif", MiningSpec(width=1024, height=1024, seed=seed, illegal_density=6.0, legal_density=2.0))
    return folder
