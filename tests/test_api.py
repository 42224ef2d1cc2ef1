"""The Python API (minescan.Scanner) and the plan it shares with the command line, on files the tests write."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio

from minescan import Scanner
from minescan.cli import main
from minescan.results.evaluation import compare
from minescan.scan.plan import OptionError
from minescan.scan.scanner import ApiError
from minescan.scan.stream import ScanCancelled
from minescan.synthetic.scene import SceneSpec, Truth
from testkit.products import write_safe

README = Path(__file__).parents[1] / "README.md"


def _found(result, truth):
    d = result.detections
    return compare(d.boxes, d.scores, d.classes, truth.boxes, truth.classes)


def test_the_readme_api_example_runs(tmp_path, monkeypatch, capsys):
    text = README.read_text()
    match = re.search(r"<!-- api-example -->\s*```python\n(.*?)```", text, re.S)
    assert match, "README has no API example marked <!-- api-example -->"
    monkeypatch.chdir(tmp_path)
    exec(compile(match.group(1), "README.md", "exec"), {"__name__": "readme"})
    printed = capsys.readouterr().out
    assert "objects" in printed and "radiometry" in printed
    meta, _, geometry, fields = pyogrio.raw.read(tmp_path / "example.gpkg")
    assert len(geometry) > 0 and "class_label" in meta["fields"]


def test_scan_detect_and_the_command_line_agree(make_scene, square_model, tmp_path):
    path, truth = make_scene(width=1500, height=1100, objects=15, seed=21, tile=256, overlap=64)
    scanner = Scanner(square_model, bands=(3, 2, 1), tile=256, overlap=64)
    result = scanner.scan(path)
    agreement = _found(result, truth)
    assert agreement.matched == len(truth.boxes) == 15 and agreement.detections == 15
    with rasterio.open(path) as src:
        array, transform, crs, nodata = src.read().transpose(1, 2, 0), src.transform, src.crs, src.nodata
    in_memory = scanner.detect(array, transform=transform, crs=crs, nodata=nodata)
    np.testing.assert_array_equal(in_memory.detections.boxes, result.detections.boxes)
    collection = result.to_geojson()
    assert in_memory.to_geojson() == {**collection, "minescan": {**collection["minescan"], "scene": "array"}, "features": [
        {**f, "properties": {**f["properties"], "scene": "array"}} for f in collection["features"]]}
    out = tmp_path / "cli.geojson"
    assert main(["scan", str(path), "--model", str(square_model), "--bands", "3,2,1", "--tile", "256", "--overlap", "64",
                 "--out", str(out)]) == 0
    written = json.loads(out.read_text())
    assert written["features"] == collection["features"] and written["minescan"] == collection["minescan"]
    # Without georeferencing an array scans in pixels, and refuses to be placed on a map.
    pixels = scanner.detect(array)
    np.testing.assert_array_equal(pixels.detections.boxes, result.detections.boxes)
    with pytest.raises(ApiError, match="no CRS"):
        pixels.to_geojson()


def test_one_scanner_serves_concurrent_scans(make_scene, square_model):
    path, truth = make_scene(width=1400, height=1000, objects=12, seed=8, tile=256, overlap=64)
    scanner = Scanner(square_model, bands=(3, 2, 1), tile=256, overlap=64)
    results, errors = [None] * 4, []

    def scan(i: int) -> None:
        try:
            results[i] = scanner.scan(path) if i % 2 else scanner.detect(_array(path), transform=_transform(path), crs="EPSG:32633")
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    from rasterio.env import get_gdal_config

    cache_before = get_gdal_config("GDAL_CACHEMAX")
    threads = [threading.Thread(target=scan, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    # GDAL's block cache is one per process: concurrent scans must leave it as they found it
    # (nested rasterio.Env blocks in threads once left a 32-byte cache behind, and quicklooks took 70 s).
    assert get_gdal_config("GDAL_CACHEMAX") == cache_before
    for r in results:
        np.testing.assert_array_equal(r.detections.boxes, results[1].detections.boxes)
        assert _found(r, truth).matched == 12


def _array(path):
    with rasterio.open(path) as src:
        return src.read().transpose(1, 2, 0)


def _transform(path):
    with rasterio.open(path) as src:
        return src.transform


def test_progress_and_cancel(make_scene, square_model, tmp_path):
    path, _ = make_scene(width=1500, height=1500, objects=5, seed=3, tile=256, overlap=32)
    scanner = Scanner(square_model, bands=(3, 2, 1), tile=256, overlap=32)
    from rasterio.env import get_gdal_config

    seen, caches = [], []

    def record(done: int, total: int) -> None:
        seen.append((done, total))
        caches.append(get_gdal_config("GDAL_CACHEMAX"))

    result = scanner.scan(path, progress=record)
    assert min(caches) >= 32 << 20  # bytes: a scan's block cache holds its strips (not 32 bytes)
    assert seen[-1] == (result.tiles, result.tiles) and [d for d, _ in seen] == sorted({d for d, _ in seen})
    cancel = threading.Event()

    def stop_after_first(done: int, total: int) -> None:
        cancel.set()

    with pytest.raises(ScanCancelled) as cancelled:
        scanner.scan(path, progress=stop_after_first, cancel=cancel)
    # Every stage's thread has ended, though the exception (kept here) still references the scan's frames.
    assert cancelled.value is not None
    assert [t.name for t in threading.enumerate() if t.name.startswith("minescan-")] == []


def test_options_are_checked_in_the_api_and_the_cli_alike(square_model, make_scene, tmp_path, capsys):
    path, _ = make_scene(width=300, height=300, objects=1)
    for name, value in (("score_threshold", -1), ("overlap", -5), ("iou", 0), ("batch", 0), ("gain", -2), ("tile", 8),
                        ("drop_parts", 1.5), ("read_threads", 0), ("scale", 0), ("stretch", (60, 40))):
        with pytest.raises(OptionError, match=f"^{name} .* is out of range"):
            Scanner(square_model).scan(path, **{name: value})
    with pytest.raises(ApiError, match="unknown scan option 'tiel'"):
        Scanner(square_model).scan(path, tiel=256)
    out = tmp_path / "r.gpkg"
    assert main(["scan", str(path), "--model", str(square_model), "--out", str(out), "--score-threshold", "-1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["minescan: error: --score-threshold -1.0 is out of range: must be in [0, 1]"] and not out.exists()


def test_dry_run_explains_the_plan_and_scans_nothing(make_scene, square_model, tmp_path, capsys):
    path, _ = make_scene(width=1000, height=800, objects=3, nodata_width=300)
    out = tmp_path / "r.gpkg"
    assert main(["scan", str(path), "--model", str(square_model), "--out", str(out), "--bands", "3,2,1",
                 "--overlap", "64", "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert not out.exists()
    lines = dict(line.split(None, 1) for line in text.strip().splitlines())
    assert lines["bands"] == "3,2,1 (B04, B03, B02) [option]"
    assert "gain 2.5 [default]" in lines["radiometry"] and "offset 0 [default]" in lines["radiometry"]
    assert "640 px [default], overlap 64 px [option]: 2 x 2 = 4 tiles" in lines["tiles"]
    assert "all nodata" in lines["tiles"] and "onnxruntime-cpu" in lines["inference"]
    assert "IoU 0.4 [default]" in lines["stitching"] and "drop parts off [default]" in lines["stitching"]
    assert lines["labels"] == "1 red_square, 2 blue_square [model]"
    assert lines["output"] == f"{out} (GeoPackage, scene CRS)"


SAFE_SPEC = SceneSpec(width=700, height=600, objects=0, seed=5, nodata_width=120)
SAFE_TRUTH = Truth.of([(100, 100, 130, 125), (400, 300, 440, 330), (600, 500, 640, 540)], [1, 2, 1])


def test_a_safe_product_scans_with_out_and_its_offset(tmp_path, square_model, capsys):
    safe, truth = write_safe(tmp_path, SAFE_SPEC, SAFE_TRUTH)
    out = tmp_path / "safe.gpkg"
    assert main(["scan", str(safe), "--model", str(square_model), "--out", str(out)]) == 0
    _, _, geometry, fields = pyogrio.raw.read(out)
    assert len(geometry) == 3
    assert main(["scan", str(safe), "--model", str(square_model), "--out", str(out), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert re.search(r"offset -1000 \[product\]", text) and re.search(r"nodata\s+0 \[product\]", text)
    assert re.search(r"bands\s+1,2,3 \(B04, B03, B02\) \[product\]", text), text
