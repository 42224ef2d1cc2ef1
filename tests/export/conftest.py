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
    from minescan.export.fixture_model import build_fixture_model

    return build_fixture_model(tmp_path_factory.mktemp("fixture"), backbone="tiny", seed=0)


@pytest.fixture(scope="session")
def exported(saved_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The ExportReport of converting the tiny fixture with default options."""
    from minescan.export import export_onnx

    return export_onnx(saved_model_dir, tmp_path_factory.mktemp("onnx") / "model.onnx")
