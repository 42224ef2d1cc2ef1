"""Shared fixtures: the known-answer detector and scene writers.

Everything a test reads is made here by the project's own code.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from minescan.synthetic.scene import SceneSpec, Truth, write_scene
from testkit.square_detector import save_square_detector


@pytest.fixture(scope="session")
def square_model(tmp_path_factory) -> Path:
    """Bright-rectangle detector, dynamic batch and size."""
    return save_square_detector(tmp_path_factory.mktemp("models") / "square.onnx")


@pytest.fixture(scope="session")
def od_api_like_model(tmp_path_factory) -> Path:
    """The same detector shaped like a real OD API export: batch fixed at 1, 300 detections."""
    return save_square_detector(tmp_path_factory.mktemp("models") / "square_b1.onnx", batch=1, max_detections=300)


@pytest.fixture
def make_scene(tmp_path):
    """Write a scene (``SceneSpec`` fields as keywords, optional explicit ``truth``) and return (path, truth)."""

    def make(name: str = "scene.tif", truth: Truth | None = None, **spec) -> tuple[Path, Truth]:
        path = tmp_path / name
        return path, write_scene(path, SceneSpec(**spec), truth)

    return make
