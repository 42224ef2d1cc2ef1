"""Bad input: one line on stderr, a non-zero exit, nothing half-written."""

import subprocess
import sys

import numpy as np
import pytest
import rasterio

from minescan.cli import main
from minescan.synthetic.scene import Truth


@pytest.fixture
def good_scene(make_scene):
    return make_scene(width=700, height=700, truth=Truth.of([(100, 100, 130, 130)]))[0]


def _fails(capsys, argv, message):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("minescan: error: ")
    assert message in lines[0]
    return lines[0]


def test_missing_raster(capsys, square_model, tmp_path):
    _fails(capsys, ["scan", str(tmp_path / "none.tif"), "--model", str(square_model), "--out", str(tmp_path / "r.gpkg")], "scene not found")
    assert not (tmp_path / "r.gpkg").exists()


def test_corrupt_raster_keeps_an_existing_result(capsys, square_model, tmp_path):
    bad = tmp_path / "corrupt.tif"
    bad.write_bytes(b"II*\x00" + np.random.default_rng(0).bytes(5000))
    out = tmp_path / "r.gpkg"
    out.write_text("yesterday's result")
    _fails(capsys, ["scan", str(bad), "--model", str(square_model), "--out", str(out)], "corrupt.tif: not a readable raster")
    assert out.read_text() == "yesterday's result"


def test_truncated_raster(capsys, square_model, make_scene, tmp_path):
    scene, _ = make_scene(width=2000, height=2000, objects=5)
    blob = scene.read_bytes()
    scene.write_bytes(blob[: len(blob) // 3])
    _fails(capsys, ["scan", str(scene), "--model", str(square_model), "--out", str(tmp_path / "r.gpkg")], "scene.tif")
    assert not (tmp_path / "r.gpkg").exists()


def test_band_out_of_range(capsys, square_model, good_scene, tmp_path):
    _fails(capsys, ["scan", str(good_scene), "--model", str(square_model), "--out", str(tmp_path / "r.gpkg"), "--bands", "5,2,1"], "band 5 (from the option) is out of range: scene.tif has 4 bands")


def test_raster_without_georeferencing(capsys, square_model, tmp_path):
    path = tmp_path / "plain.tif"
    with pytest.warns(rasterio.errors.NotGeoreferencedWarning):
        with rasterio.open(path, "w", driver="GTiff", width=100, height=100, count=3, dtype="uint8") as dst:
            dst.write(np.zeros((3, 100, 100), np.uint8))
    _fails(capsys, ["scan", str(path), "--model", str(square_model), "--out", str(tmp_path / "r.gpkg")], "has no georeferencing")


def test_raster_without_georeferencing_is_one_line_in_a_real_process(square_model, tmp_path):
    path = tmp_path / "plain.tif"
    with pytest.warns(rasterio.errors.NotGeoreferencedWarning):
        with rasterio.open(path, "w", driver="GTiff", width=100, height=100, count=3, dtype="uint8") as dst:
            dst.write(np.zeros((3, 100, 100), np.uint8))
    run = subprocess.run([sys.executable, "-m", "minescan", "scan", str(path), "--model", str(square_model), "--out",
                          str(tmp_path / "r.gpkg")], capture_output=True, text=True)
    # rasterio's own NotGeoreferencedWarning (two lines) no longer precedes minescan's one line.
    assert run.returncode == 1 and run.stderr.splitlines() == [
        f"minescan: error: {path}: has no georeferencing (no CRS or geotransform); results could not be placed on a map"]


def test_four_band_raster_without_band_names_asks_for_bands(capsys, square_model, tmp_path):
    path = tmp_path / "anon.tif"
    with rasterio.open(path, "w", driver="GTiff", width=100, height=100, count=4, dtype="uint16", crs="EPSG:32633",
                       transform=rasterio.transform.from_origin(0, 0, 10, 10)) as dst:
        dst.write(np.ones((4, 100, 100), np.uint16))
    _fails(capsys, ["scan", str(path), "--model", str(square_model), "--out", str(tmp_path / "r.gpkg")], "give its red, green, blue band indexes, e.g. 3,2,1")


def test_missing_model(capsys, good_scene, tmp_path):
    _fails(capsys, ["scan", str(good_scene), "--model", str(tmp_path / "m.onnx"), "--out", str(tmp_path / "r.gpkg")], "model not found")


def test_model_outside_the_contract(capsys, good_scene, tmp_path):
    from onnx import TensorProto, helper, save

    graph = helper.make_graph(
        [helper.make_node("Identity", ["images"], ["logits"])], "classifier",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 224, 224, 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 224, 224, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    save(model, str(tmp_path / "classifier.onnx"))
    line = _fails(capsys, ["scan", str(good_scene), "--model", str(tmp_path / "classifier.onnx"), "--out", str(tmp_path / "r.gpkg")],
                  "is neither a detector (input_tensor uint8 [batch, H, W, 3] -> detection_boxes")
    assert "it has inputs images float [1, 224, 224, 3] and outputs logits float [1, 224, 224, 3]" in line


@pytest.mark.parametrize("out,message", [("missing/dir/r.gpkg", "does not exist"), ("r.shx", "unknown result format '.shx'"), ("adir.gpkg", "is a folder")])
def test_unwritable_output_fails_before_scanning(capsys, square_model, good_scene, tmp_path, out, message):
    (tmp_path / "adir.gpkg").mkdir()
    _fails(capsys, ["scan", str(good_scene), "--model", str(square_model), "--out", str(tmp_path / out)], message)


def test_interrupted_write_leaves_no_file(capsys, square_model, good_scene, tmp_path, monkeypatch):
    import pyogrio.raw

    def interrupted(path, *args, **kwargs):
        with open(path, "wb") as partial:
            partial.write(b"half a geopackage")
        raise KeyboardInterrupt

    monkeypatch.setattr(pyogrio.raw, "write", interrupted)
    code = main(["scan", str(good_scene), "--model", str(square_model), "--out", str(tmp_path / "r.gpkg")])
    assert code == 130 and "interrupted" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.tif"]


def test_real_process_exit_code_quiet_stderr_and_verbose_traceback(square_model, good_scene, tmp_path):
    ok = subprocess.run([sys.executable, "-m", "minescan", "scan", str(good_scene), "--model", str(square_model), "--out", str(tmp_path / "r.geojson")],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stderr == ""  # no progress bar when stderr is not a terminal
    assert "1 detections" in ok.stdout and "tiles/s" in ok.stdout
    bad = [sys.executable, "-m", "minescan", "scan", str(tmp_path / "none.tif"), "--model", str(square_model), "--out", str(tmp_path / "x.gpkg")]
    failed = subprocess.run(bad, capture_output=True, text=True)
    assert failed.returncode == 1 and failed.stderr.count("\n") == 1 and "Traceback" not in failed.stderr
    verbose = subprocess.run(bad[:3] + ["--verbose"] + bad[3:], capture_output=True, text=True)
    assert verbose.returncode == 1 and "Traceback" in verbose.stderr


def test_demo_runs_the_shipped_detector_and_meets_its_targets(tmp_path, capsys):
    assert main(["demo", "--out-dir", str(tmp_path), "--size", "3072x3072", "--seed", "11"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith(("illegal_mining", "legal_mining"))}
    assert set(rows) == {"illegal_mining", "legal_mining"}
    for row in rows.values():  # class truth detections TP FP FN precision recall AP
        assert int(row[1]) > 0 and float(row[6]) >= 0.9 and float(row[7]) >= 0.9
    for name in ("scene.tif", "detections.geojson", "detections.gpkg", "truth.geojson", "quicklook.png"):
        assert (tmp_path / name).is_file()
    assert (tmp_path / "quicklook.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_classifier_writes_a_heatmap_its_regions_and_quicklook_and_scores_it(tmp_path, capsys):
    import rasterio

    assert main(["demo", "--classifier", "--out-dir", str(tmp_path), "--size", "2048x2048", "--seed", "12"]) == 0
    out = capsys.readouterr().out
    assert "with demo_classifier.onnx (onnxruntime-cpu)" in out and "heatmap 64 x 64 cells" in out
    scores = next(line.split() for line in out.splitlines() if line.startswith("precision"))
    # per window on a scene it never saw: the shipped classifier finds the mining (fresh-scene F1 0.97 per window)
    assert float(scores[1]) >= 0.8 and float(scores[3]) >= 0.8 and float(scores[8]) >= 0.95, out  # P, R, AUC
    with rasterio.open(tmp_path / "heatmap.tif") as src:
        assert src.descriptions == ("other", "mining") and src.overviews(1)
    for name in ("regions.gpkg", "truth.geojson", "quicklook.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_demo_runs_the_int8_model_on_request(tmp_path, capsys):
    assert main(["demo", "--out-dir", str(tmp_path), "--size", "2048x2048", "--seed", "4", "--precision", "int8"]) == 0
    out = capsys.readouterr().out
    assert "with demo_detector_int8.onnx (onnxruntime-cpu)" in out
    # The INT8 model finds the sites too, scored against the scene's own truth.
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith(("illegal_mining", "legal_mining"))}
    assert int(rows["illegal_mining"][1]) > 0
    for row in rows.values():  # class truth detections TP FP FN precision recall AP
        if int(row[1]) > 0:
            assert float(row[6]) >= 0.9 and float(row[7]) >= 0.9, row


def test_auto_backend_on_a_machine_without_a_gpu_package_is_quiet(capsys, square_model, good_scene, tmp_path):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed here")
    assert main(["scan", str(good_scene), "--model", str(square_model), "--out", str(tmp_path / "r.geojson")]) == 0
    out, err = capsys.readouterr()
    # The default backend, not asked for, with no GPU package installed: no notice, on stdout or stderr.
    assert out.startswith("scene.tif: ") and "note" not in out
    assert err == ""


def test_build_without_tensorrt_is_one_line(capsys, square_model, tmp_path):
    from minescan.engine.backends import TensorRTUnavailableError

    try:
        import minescan.engine.tensorrt_common  # noqa: F401
    except TensorRTUnavailableError:
        pass
    else:
        pytest.skip("TensorRT is installed here")
    _fails(capsys, ["build", str(square_model), "--out", str(tmp_path / "m.engine")], "TensorRT is not available")
