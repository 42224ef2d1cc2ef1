"""``minescan bench`` with a tile classifier: windows every --stride px, the accumulate stage; timings never asserted."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from minescan.cli import main
from minescan.scan.heatmap import HeatmapLayout

WIDTH, HEIGHT, WINDOW = 700, 500, 64


@pytest.fixture(scope="module")
def scene_and_model(tmp_path_factory):
    from minescan.synthetic.scene import SceneSpec, write_scene
    from testkit.bright_classifier import save_bright_classifier

    folder = tmp_path_factory.mktemp("bench")
    scene = folder / "scene.tif"
    write_scene(scene, SceneSpec(width=WIDTH, height=HEIGHT, objects=8, seed=6, nodata_width=150))
    return scene, save_bright_classifier(folder / "bright.onnx", size=WINDOW)


@pytest.mark.parametrize("stride", [None, 16])
def test_bench_of_a_classifier_counts_the_heatmaps_windows_per_batch(scene_and_model, tmp_path, capsys, stride):
    scene, model = scene_and_model
    out = tmp_path / "bench.json"
    argv = ["bench", str(scene), "--model", str(model), "--batch", "1,8", "--threads", "1", "--workers", "1", "--json", str(out)]
    assert main(argv + (["--stride", str(stride)] if stride else [])) == 0
    printed = capsys.readouterr().out
    layout = HeatmapLayout.of(WIDTH, HEIGHT, WINDOW, stride)  # default: half the window, as scan
    rows, cols = layout.window_shape
    origin = "option" if stride else "default: half the window"
    assert (f"tile classifier: 64 px windows every {layout.stride} px [{origin}], {cols} x {rows} = {len(layout)} windows, "
            f"heatmap {layout.shape[1]} x {layout.shape[0]} cells") in printed
    lines = printed.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("batch threads workers"))
    assert "windows/s" in lines[header] and "tiles" not in lines[header]
    table = [line.split() for line in lines[header + 1 : header + 3]]
    assert [row[:4] for row in table] == [["1", "1", "1", str(len(layout))], ["8", "1", "1", str(len(layout))]]
    assert lines[header + 3] == "" and "p50 ms/window" in lines[header + 4]
    stage_rows = [line.split()[0] for line in lines[header + 5 :] if re.match(r"\w+ +[\d.]+ \|", line)]
    assert stage_rows == ["read", "radiometry", "inference", "accumulate", "write"] * 2
    results = json.loads(out.read_text())["results"]
    assert [r["batch"] for r in results] == [1, 8]
    for r in results:
        assert r["task"] == "classifier" and r["windows"] == len(layout) and "tiles" not in r and "detections" not in r
        assert r["stride"] == layout.stride and r["heatmap_cells"] == list(layout.shape)
        assert set(r["alone_s"]) == set(r["in_pipeline"]) == {"read", "radiometry", "inference", "accumulate", "write"}
        assert r["in_pipeline"]["accumulate"]["total_s"] > 0 and r["in_pipeline"]["inference"]["total_s"] > 0
        assert r["windows_per_s"] == r["windows"] / r["pipeline_s"] and r["peak_rss_mb"] > 0


def test_the_accumulate_pass_alone_blends_the_same_heatmap_as_the_scan(scene_and_model, monkeypatch):
    """Pass 3 gets each window's nodata mask, so it does the scan's work, not a cheaper one."""
    from minescan.scan import heatmap
    from minescan.scan.bench import bench_setting
    from minescan.scan.plan import ScanOptions
    from minescan.scan.scanner import Scanner

    scene, model = scene_and_model
    maps = []
    finish = heatmap.HeatmapConsumer.finish
    monkeypatch.setattr(heatmap.HeatmapConsumer, "finish", lambda self: maps.append(finish(self)) or maps[-1])
    result = bench_setting(scene, lambda: Scanner(model, threads=1, workers=1), 4, ScanOptions(stride=32))
    assert result.task == "classifier" and result.unit == "windows" and result.cells == (16, 22)
    alone, scanned = maps
    assert np.isnan(scanned).any()  # the swath's nodata corner
    np.testing.assert_array_equal(alone, scanned)


def test_detector_options_with_a_classifier_and_a_bad_stride_are_one_line_errors(scene_and_model, capsys):
    scene, model = scene_and_model
    assert main(["bench", str(scene), "--model", str(model), "--overlap", "32"]) == 1
    err = capsys.readouterr().err
    assert "--overlap not for" in err and "a tile classifier (its windows overlap by window - stride: use --stride)" in err
    assert err.count("\n") == 1
    assert main(["bench", str(scene), "--model", str(model), "--stride", "24"]) == 1
    err = capsys.readouterr().err
    assert "--stride 24 is out of range: must divide the classifier's window of 64 px" in err and err.count("\n") == 1


def test_stride_is_refused_for_a_detector(scene_and_model, tmp_path, capsys):
    from testkit.square_detector import save_square_detector

    scene, _ = scene_and_model
    detector = save_square_detector(tmp_path / "squares.onnx")
    assert main(["bench", str(scene), "--model", str(detector), "--stride", "32"]) == 1
    assert "--stride not for" in capsys.readouterr().err
