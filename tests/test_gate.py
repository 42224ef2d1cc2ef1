"""The classifier gate (issue 16, item 2): a tile classifier screens each detector tile before the detector.

Known answers: the square detector finds the scene's bright squares, the bright
classifier answers ``p = min(1, 4 * share of bright pixels)`` per 64 px window,
and write_scene's squares are the only pixels rendered brighter than 180.  So
at a threshold below one bright pixel's share (4 / 4096) a tile is gated off
exactly when no square reaches into it, which the tests count from the truth.
"""

from __future__ import annotations

import threading

import numpy as np
import onnx
import pytest
import rasterio

from minescan.raster.grid import TileGrid

TILE, OVERLAP = 256, 64
ONE_PIXEL = 4 / (64 * 64)  # a window's probability with one bright pixel


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from minescan.synthetic.scene import SceneSpec, write_scene
    from testkit.bright_classifier import save_bright_classifier
    from testkit.square_detector import save_square_detector

    folder = tmp_path_factory.mktemp("gate")
    scene = folder / "scene.tif"
    truth = write_scene(scene, SceneSpec(width=900, height=640, objects=6, seed=4))
    return {"scene": scene, "truth": truth, "detector": str(save_square_detector(folder / "squares.onnx")),
            "gate": str(save_bright_classifier(folder / "bright.onnx", size=64)), "folder": folder}


def tiles_without_squares(truth, width: int, height: int) -> int:
    """Tiles of the scan grid whose pixels no truth box reaches (counted by hand, from the truth)."""
    count = 0
    for tile in TileGrid(width, height, TILE, OVERLAP):
        x0, y0 = tile.col_off, tile.row_off
        x1, y1 = x0 + tile.valid_width, y0 + tile.valid_height
        count += not any(bx0 < x1 and bx1 > x0 and by0 < y1 and by1 > y0 for bx0, by0, bx1, by1 in truth.boxes)
    return count


def same(a, b) -> None:
    np.testing.assert_array_equal(a.detections.boxes, b.detections.boxes)
    np.testing.assert_array_equal(a.detections.scores, b.detections.scores)
    np.testing.assert_array_equal(a.detections.classes, b.detections.classes)


def test_threshold_zero_gates_nothing_and_a_low_one_gates_exactly_the_tiles_without_squares(files):
    from minescan import Scanner

    plain = Scanner(files["detector"]).scan(files["scene"], tile=TILE, overlap=OVERLAP)
    gated = Scanner(files["detector"], gate=files["gate"])
    open_gate = gated.scan(files["scene"], tile=TILE, overlap=OVERLAP, gate_threshold=0.0)
    assert open_gate.gated == 0 and open_gate.tiles == plain.tiles == 15 and open_gate.skipped == plain.skipped == 0
    same(open_gate, plain)

    low = gated.scan(files["scene"], tile=TILE, overlap=OVERLAP, gate_threshold=ONE_PIXEL / 2)
    expected = tiles_without_squares(files["truth"], 900, 640)
    assert 0 < expected < 15 and low.gated == expected and low.skipped == 0
    same(low, plain)  # every square is bright: each tile a square reaches still goes to the detector
    assert len(plain.detections) == len(files["truth"].boxes)
    meta = low.metadata()["gate"]
    assert meta == {"model": "bright.onnx", "threshold": ONE_PIXEL / 2, "window": 64, "stride": 64,
                    "gated": expected, "tiles": 15}
    # At 1 only tiles holding a window a quarter bright (a square of at least 32 x 32 px) pass.
    strict = gated.scan(files["scene"], tile=TILE, overlap=OVERLAP, gate_threshold=1.0)
    assert expected < strict.gated < 15 and strict.skipped == 0
    assert 0 < len(strict.detections) < len(plain.detections)
    # The default threshold comes from minescan.defaults, and the plan says so.
    from minescan.defaults import DEFAULTS

    plan = gated.plan(files["scene"], tile=TILE, overlap=OVERLAP)
    assert plan.gate.threshold == DEFAULTS.gate_threshold and plan.gate.threshold_origin == "default"


def test_the_api_takes_a_loaded_classifier_and_refuses_what_cannot_gate(files):
    from minescan import Scanner
    from minescan.engine import load_detector
    from minescan.errors import MinescanError
    from minescan.scan.gate import GateError

    classifier = load_detector(files["gate"], backend="cpu")
    scanner = Scanner(files["detector"], gate=classifier, gate_threshold=ONE_PIXEL / 2)
    result = scanner.scan(files["scene"], tile=TILE, overlap=OVERLAP)
    assert result.gated == tiles_without_squares(files["truth"], 900, 640)
    with pytest.raises(GateError, match="gate squares.onnx is a detector; a gate must be a tile classifier"):
        Scanner(files["detector"], gate=files["detector"])
    with pytest.raises(GateError, match="the scanned model is a classifier"):
        Scanner(files["gate"], gate=files["gate"])
    with pytest.raises(GateError, match="its window of 64 px is larger than the detector's tile of 32 px"):
        Scanner(files["detector"], gate=files["gate"]).plan(files["scene"], tile=32, overlap=0)
    with pytest.raises(MinescanError, match="gate_threshold 1.5 is out of range: must be in \\[0, 1\\]"):
        Scanner(files["detector"], gate=files["gate"], gate_threshold=1.5)
    with pytest.raises(MinescanError, match="gate_threshold 0.3 given, but the scanner has no gate"):
        Scanner(files["detector"]).scan(files["scene"], gate_threshold=0.3)


def test_a_gate_with_another_rendering_is_refused(files):
    from minescan import Scanner
    from minescan.export.onnx_metadata import write_metadata
    from minescan.model.metadata import ModelMetadata, Recipe
    from minescan.scan.gate import GateError
    from testkit.bright_classifier import LABELS, build_bright_classifier

    model = build_bright_classifier(size=64)
    write_metadata(model, ModelMetadata(labels=LABELS, input_size=(64, 64), recipe=Recipe(gain=4.0)))
    other = files["folder"] / "bright_gain4.onnx"
    onnx.save(model, str(other))
    with pytest.raises(GateError, match="gate bright_gain4.onnx renders the scene differently from the detector: it "
                       "normalises with a fixed gain of 4 where the detector uses a fixed gain"):
        Scanner(files["detector"], gate=other).plan(files["scene"], tile=TILE, overlap=OVERLAP)


def test_the_command_line_shows_the_gate_in_the_plan_the_summary_and_the_result_file(files, capsys):
    from minescan.cli import main
    from minescan.results.read import scan_metadata

    scene, detector, gate = str(files["scene"]), files["detector"], files["gate"]
    out = files["folder"] / "det.gpkg"
    common = [scene, "--model", detector, "--tile", str(TILE), "--overlap", str(OVERLAP)]
    assert main(["scan", *common, "--gate", gate, "--dry-run"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("gate "))
    assert line.startswith("gate        bright.onnx on ") and line.endswith(
        ": windows of 64 px side by side inside each tile, tiles whose max P(bright) < 0.2 [default] skip the detector")
    threshold = "0.0005"
    expected = tiles_without_squares(files["truth"], 900, 640)
    assert main(["scan", *common, "--gate", gate, "--gate-threshold", threshold, "--out", str(out)]) == 0
    assert f"15 tiles (0 skipped as nodata, {expected} tiles gated off by bright.onnx at 0.0005), 6 detections" \
        in capsys.readouterr().out
    meta = scan_metadata(out)
    assert meta["gate"] == {"model": "bright.onnx", "threshold": 0.0005, "window": 64, "stride": 64,
                            "gated": expected, "tiles": 15} and meta["detections"] == 6
    assert main(["scan", *common, "--gate", gate, "--gate-threshold", "1.5", "--out", str(out)]) == 1
    assert "--gate-threshold 1.5 is out of range: must be in [0, 1]" in capsys.readouterr().err
    assert main(["scan", *common, "--gate-threshold", "0.3", "--out", str(out)]) == 1
    assert "--gate-threshold 0.3 needs --gate CLASSIFIER" in capsys.readouterr().err
    assert main(["scan", *common, "--gate", detector, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "gate squares.onnx is a detector" in err and len(err.strip().splitlines()) == 1


def test_a_run_counts_gated_tiles_per_scene_in_the_journal_and_the_summary(files, capsys):
    import json

    from minescan.cli import main

    out_dir = files["folder"] / "run"
    other = files["folder"] / "scene_b.tif"
    other.write_bytes(files["scene"].read_bytes())
    args = ["scan", str(files["scene"]), str(other), "--model", files["detector"], "--gate", files["gate"],
            "--gate-threshold", "0.0005", "--tile", str(TILE), "--overlap", str(OVERLAP), "--out-dir", str(out_dir),
            "--quicklook-size", "0"]
    expected = tiles_without_squares(files["truth"], 900, 640)
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.count(f"15 tiles (0 nodata, {expected} gated off), 6 detections") == 2
    assert f"30 tiles ({2 * expected} gated off), 12 detections" in out
    totals = json.loads((out_dir / "run_summary.json").read_text())["totals"]
    assert totals["gated"] == 2 * expected
    assert main(args) == 0  # resumed: the journal kept the counts
    assert json.loads((out_dir / "run_summary.json").read_text())["totals"]["gated"] == 2 * expected
    assert "done in an earlier run" in capsys.readouterr().out
    # Another threshold is another result: the scenes are scanned again.
    assert main([*args[:8], "0.001", *args[9:]]) == 0
    assert "done in an earlier run" not in capsys.readouterr().out


def test_calibrate_gate_prices_each_threshold_in_recall_and_skipped_tiles(files, capsys):
    from minescan import Scanner
    from minescan.cli import main
    from minescan.model.detections import SceneDetections
    from minescan.results.writers import write_detections
    from minescan.scan.calibrate_gate import calibrate

    truth = files["truth"]
    truth_file = files["folder"] / "truth.gpkg"
    with rasterio.open(files["scene"]) as src:
        transform, crs = src.transform, src.crs
    write_detections(truth_file, SceneDetections(truth.boxes, np.ones(len(truth.boxes), np.float32), truth.classes),
                     transform=transform, crs=crs, labels={1: "red_square", 2: "blue_square"}, scene="scene.tif")
    expected = tiles_without_squares(truth, 900, 640)
    scanner = Scanner(files["detector"], gate=files["gate"])
    result = calibrate(scanner, [(files["scene"], truth_file)], 0.99, thresholds=[ONE_PIXEL / 2, 1.0],
                       tile=TILE, overlap=OVERLAP)
    zero, low, strict = result.points
    assert (zero.threshold, zero.recall, zero.gated, zero.tiles) == (0.0, 1.0, 0, 15)
    assert (low.recall, low.gated) == (1.0, expected) and result.choice is low
    # The replay equals a gated scan at that threshold.
    scan = scanner.scan(files["scene"], tile=TILE, overlap=OVERLAP, gate_threshold=1.0)
    assert strict.gated == scan.gated and strict.found == len(scan.detections) < 6 and strict.recall < 0.99
    args = ["calibrate-gate", str(files["scene"]), str(truth_file), "--detector", files["detector"], "--gate",
            files["gate"], "--tile", str(TILE), "--overlap", str(OVERLAP), "--thresholds", "0.0005,1", "--recall", "0.99"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert (f"gate threshold 0.0005: keeps 100.0% of the ungated recall (recall 1.000, ungated 1.000), "
            f"{expected / 15:.1%} of tiles skipped") in out
    assert main([*args[:-1], "1"]) == 0 and "gate threshold 0.0005: keeps 100.0%" in capsys.readouterr().out
    # A truth object the detector cannot find lowers every recall, but not the share the gate keeps.
    phantom = files["folder"] / "truth_phantom.gpkg"
    boxes = np.vstack([truth.boxes, [[860, 600, 890, 630]]])  # a dark corner: no square there
    write_detections(phantom, SceneDetections(boxes, np.ones(len(boxes), np.float32), np.append(truth.classes, 1)),
                     transform=transform, crs=crs, labels={1: "red_square", 2: "blue_square"}, scene="scene.tif")
    assert main([args[0], args[1], str(phantom), *args[3:]]) == 0
    assert "gate threshold 0.0005: keeps 100.0% of the ungated recall (recall 0.857, ungated 0.857)" in capsys.readouterr().out
    assert main(args[:2] + args[3:]) == 1
    assert "give SCENE TRUTH pairs; 1 files is an odd number" in capsys.readouterr().err


def test_nodata_tiles_are_skipped_not_gated_and_gated_tiles_are_not_nodata(tmp_path, files):
    from minescan import Scanner
    from minescan.synthetic.scene import SceneSpec, write_scene

    scene = tmp_path / "swath.tif"
    truth = write_scene(scene, SceneSpec(width=900, height=640, objects=6, seed=5, nodata_width=500))
    plain = Scanner(files["detector"]).scan(scene, tile=TILE, overlap=OVERLAP)
    gated = Scanner(files["detector"], gate=files["gate"]).scan(scene, tile=TILE, overlap=OVERLAP,
                                                                 gate_threshold=ONE_PIXEL / 2)
    assert plain.skipped > 0 and gated.skipped == plain.skipped
    assert gated.gated == tiles_without_squares(truth, 900, 640) - plain.skipped > 0  # squares avoid the nodata
    same(gated, plain)


def test_the_service_gates_the_scene_jobs_of_a_model_given_a_gate(files, tmp_path):
    from types import SimpleNamespace

    pytest.importorskip("starlette")
    from minescan.serve.app import ServeError, ServeSettings, Service

    settings = ServeSettings(models={"squares": files["detector"]}, gates={"squares": files["gate"]}, state=tmp_path / "state",
                             data_root=files["folder"])
    service = Service(settings)
    job = SimpleNamespace(model="squares", source=str(files["scene"]),
                          options={"tile": TILE, "overlap": OVERLAP, "gate_threshold": ONE_PIXEL / 2})
    result = service._scan_job(job, progress=lambda *a: None, cancel=threading.Event())
    assert result.gated == tiles_without_squares(files["truth"], 900, 640) and len(result.detections) == 6
    assert result.metadata()["gate"]["model"] == "bright.onnx"
    with pytest.raises(ServeError, match="gate for 'other', but no model has that name; models: squares"):
        Service(ServeSettings(models={"squares": files["detector"]}, gates={"other": files["gate"]}, state=tmp_path / "s2"))


def test_the_quicklook_dims_exactly_what_the_gate_kept_from_the_detector(files):
    from minescan import Scanner

    def read_png(path):  # the map part: the quicklook's legend panel is at its right
        with rasterio.open(path) as png:
            return np.moveaxis(png.read(), 0, -1).astype(int)[:640, :900]

    folder = files["folder"]
    plain = Scanner(files["detector"]).scan(files["scene"], tile=TILE, overlap=OVERLAP)
    low = Scanner(files["detector"], gate=files["gate"]).scan(files["scene"], tile=TILE, overlap=OVERLAP,
                                                              gate_threshold=ONE_PIXEL / 2)
    assert low.gated == len(low.gated_tiles) > 0
    seen = read_png(plain.write_quicklook(folder / "plain.png", max_size=900))
    gated = read_png(low.write_quicklook(folder / "gated.png", max_size=900))
    # Unseen: pixels of gated tiles that no detected tile covers (quicklook at full size: scene pixels).
    unseen = np.zeros((640, 900), bool)
    for t in low.gated_tiles:
        unseen[t.row_off:t.row_off + t.valid_height, t.col_off:t.col_off + t.valid_width] = True
    places = {(t.row, t.col) for t in low.gated_tiles}
    for t in TileGrid(900, 640, TILE, OVERLAP):
        if (t.row, t.col) not in places:
            unseen[t.row_off:t.row_off + t.valid_height, t.col_off:t.col_off + t.valid_width] = False
    assert unseen.any() and not unseen.all()
    assert np.array_equal(gated[~unseen], seen[~unseen])  # where the detector looked, the same picture
    np.testing.assert_allclose(gated[unseen], (seen[unseen] * 0.35).astype(int), atol=1)


def test_bench_profiles_the_gate_and_counts_the_tiles_it_keeps_from_the_detector(files, capsys):
    import json

    from minescan.cli import main

    out = files["folder"] / "bench.json"
    argv = ["bench", str(files["scene"]), "--model", files["detector"], "--gate", files["gate"], "--gate-threshold",
            str(ONE_PIXEL / 2), "--tile", str(TILE), "--overlap", str(OVERLAP), "--batch", "4", "--threads", "1",
            "--workers", "1", "--json", str(out)]
    assert main(argv) == 0
    expected = tiles_without_squares(files["truth"], 900, 640)
    assert f"(4, 1, 1): {expected} of 15 tiles gated off" in capsys.readouterr().out
    (result,) = json.loads(out.read_text())["results"]
    assert result["gated"] == expected and result["alone_s"]["gate"] > 0 and result["in_pipeline"]["gate"]["total_s"] > 0
    assert main(["bench", str(files["scene"]), "--model", files["detector"], "--gate-threshold", "0.3"]) == 1
    assert "--gate-threshold 0.3 needs --gate CLASSIFIER" in capsys.readouterr().err
