"""``minescan export`` from the command line, and the exported model scanning a scene."""

import json

import pytest

pytest.importorskip("tensorflow", reason="the export extra (tensorflow-cpu) is not installed")
pytest.importorskip("tf2onnx", reason="the export extra (tf2onnx) is not installed")

from minescan.cli import main  # noqa: E402
from minescan.engine import load_detector  # noqa: E402
from minescan.model.metadata import Postprocessing  # noqa: E402
from minescan.synthetic.scene import SceneSpec, write_scene  # noqa: E402


def test_export_verify_then_scan_with_the_recipe_from_metadata(saved_model_dir, tmp_path, capsys):
    model = tmp_path / "model.onnx"
    assert main(["export", str(saved_model_dir), "--out", str(model), "--verify", "--bands", "3,2,1", "--gain", "3"]) == 0
    out = capsys.readouterr().out
    assert "parity PASS" in out and "max box diff" in out
    detector = load_detector(model)
    assert detector.metadata.labels == {1: "illegal_mining", 2: "legal_mining"}
    assert detector.metadata.recipe.bands == (3, 2, 1) and detector.metadata.recipe.gain == 3

    scene = tmp_path / "scene.tif"
    write_scene(scene, SceneSpec(width=700, height=600, objects=5, seed=2))
    result = tmp_path / "r.geojson"
    assert main(["scan", str(scene), "--model", str(model), "--out", str(result)]) == 0
    assert "2 tiles" in capsys.readouterr().out
    # The recipe came from the model's metadata: the plan says so, and the scan equals one given it explicitly.
    assert main(["scan", str(scene), "--model", str(model), "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert "bands       3,2,1 (B04, B03, B02) [model]" in plan and "gain 3 [model]" in plan
    explicit = tmp_path / "explicit.geojson"
    assert main(["scan", str(scene), "--model", str(model), "--out", str(explicit), "--bands", "3,2,1", "--gain", "3",
                 "--score-threshold", "0.5"]) == 0
    assert json.loads(result.read_text())["features"] == json.loads(explicit.read_text())["features"]


def test_export_of_a_missing_saved_model_is_one_line(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nothere"), "--out", str(tmp_path / "m.onnx")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"minescan: error: SavedModel directory {tmp_path / 'nothere'} does not exist"]
    assert not (tmp_path / "m.onnx").exists()


def test_export_records_drop_parts_for_scans_and_refuses_a_bad_share(saved_model_dir, tmp_path, capsys):
    model = tmp_path / "model.onnx"
    assert main(["export", str(saved_model_dir), "--out", str(model), "--drop-parts", "0.7"]) == 0
    assert "scans drop parts: boxes >= 0.7 inside a larger box of another class" in capsys.readouterr().out
    assert load_detector(model).metadata.postprocessing == Postprocessing(drop_parts=0.7)
    bad = tmp_path / "bad.onnx"
    assert main(["export", str(saved_model_dir), "--out", str(bad), "--drop-parts", "1.5"]) == 1
    assert "drop_parts: the part containment fraction must be in [0, 1] (0 = off), got 1.5" in capsys.readouterr().err
    assert not bad.exists()
