"""The throughput machinery: bounded threaded stages, the strip reader, incremental stitching."""

import threading
import time

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from minescan.defaults import DEFAULTS
from minescan.scan.pipeline import ordered_map, threaded
from minescan.scan.scanner import Scanner
from minescan.engine import load_detector
from minescan.raster.grid import TileGrid
from minescan.raster.scene import Scene, SceneError
from minescan.raster.strips import RowEnd, StripReader
from test_stitch import _stitch


def test_threaded_keeps_order_and_runs_ahead_by_at_most_the_queue():
    produced = []

    def source():
        for i in range(50):
            produced.append(i)
            yield i

    items = threaded(source(), maxsize=3, name="t")
    assert next(items) == 0
    # The producer fills the queue and then blocks: wait (bounded) until it has produced all it may, then
    # check it stays there while nobody consumes (a producer not held back would be through 50 items by then).
    deadline = time.monotonic() + 10
    while len(produced) < 1 + 3 + 1 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert len(produced) == 1 + 3 + 1  # consumed + queued + one blocked in put
    worker = next(t for t in threading.enumerate() if t.name == "minescan-t")
    worker.join(0.2)  # still blocked in put: it cannot end, and produces nothing more meanwhile
    assert worker.is_alive() and len(produced) == 1 + 3 + 1
    assert list(items) == list(range(1, 50))


def test_threaded_raises_the_stage_error_in_the_consumer():
    def source():
        yield 1
        raise SceneError("read failed at pixel (0, 512)")

    with pytest.raises(SceneError, match="pixel \\(0, 512\\)"):
        list(threaded(source(), maxsize=2, name="t"))


def test_closing_the_consumer_stops_every_stage_upstream():
    stages = threaded(threaded(iter(range(10**9)), maxsize=2, name="a"), maxsize=2, name="b")
    assert next(stages) == 0
    workers = [t for t in threading.enumerate() if t.name in ("minescan-a", "minescan-b")]
    assert len(workers) == 2
    stages.close()  # joins stage b, whose end closes stage a
    for worker in workers:
        worker.join(10)
    assert not any(worker.is_alive() for worker in workers)


def test_ordered_map_runs_calls_side_by_side_and_keeps_input_order():
    # Three calls meet at a barrier: it opens only if all three run at the same time (else it times out and
    # the test fails), and the first of each three finishes last, so results come back out of order.
    barrier, done_later = threading.Barrier(3, timeout=10), {}

    def call(i):
        barrier.wait()
        if i % 3 == 0:
            done_later[i] = threading.Event()
            done_later[i].wait(0.05)
        return i * i

    assert list(ordered_map(call, range(30), workers=3, name="t")) == [i * i for i in range(30)]


def test_ordered_map_raises_the_call_error_in_the_consumer_and_stops():
    started = []

    def fail_at_five(i):
        started.append(i)
        if i == 5:
            raise SceneError("read failed at pixel (0, 512)")
        return i

    results = ordered_map(fail_at_five, range(1000), workers=2, name="t")
    with pytest.raises(SceneError, match="pixel \\(0, 512\\)"):
        list(results)
    assert len(started) < 20  # nothing queued far beyond the failure


def test_cpu_split_fills_the_cores(monkeypatch):
    cpu_split = DEFAULTS.cpu_split
    import minescan.defaults as defaults

    monkeypatch.setattr(defaults, "available_cores", lambda: 2)
    assert cpu_split() == (1, 2) and cpu_split(threads=2) == (2, 1) and cpu_split(workers=1) == (2, 1)
    monkeypatch.setattr(defaults, "available_cores", lambda: 16)
    assert cpu_split() == (4, 4) and cpu_split(threads=8) == (8, 2) and cpu_split(threads=1, workers=3) == (1, 3)


def test_concurrent_inference_finds_exactly_what_one_call_at_a_time_finds(make_scene, square_model):
    path, truth = make_scene(width=2000, height=1500, objects=40, seed=12, tile=256, overlap=64)
    options = dict(bands=(3, 2, 1), tile=256, overlap=64, batch=2)
    one = Scanner(square_model, threads=1, workers=1).scan(path, **options)
    three = Scanner(square_model, threads=1, workers=3).scan(path, **options)
    assert load_detector(square_model, threads=1, workers=3).concurrency == 3
    assert len(one.detections) == len(truth.boxes) == 40
    np.testing.assert_array_equal(one.detections.boxes, three.detections.boxes)
    np.testing.assert_array_equal(one.detections.classes, three.detections.classes)


@pytest.mark.parametrize("width,height,blocks,size,overlap", [(1300, 1100, 256, 512, 64), (300, 200, None, 512, 64), (600, 2300, 256, 384, 96)])
@pytest.mark.parametrize("stretch", [False, True])
def test_rendering_in_the_reader_gives_exactly_the_per_tile_rendering(tmp_path, width, height, blocks, size, overlap, stretch):
    from minescan.scan.pipeline import StageClock
    from minescan.raster.radiometry import percentile_stretch, reflectance_gain
    from testkit import reference_render

    path = tmp_path / "s.tif"
    _write(path, width, height, blocks)
    with Scene(path, bands=(3, 1, 2)) as scene:
        sample = scene.overview()
        radiometry = percentile_stretch(sample.data, ~sample.nodata, 2, 98) if stretch else reflectance_gain(3, gain=3.0, offset=-1000)
        grid = TileGrid(width, height, size, overlap)
        expected = [scene.read(t) for t in grid]
        clock = StageClock()
        rendered = [i for i in StripReader(scene, grid, 2, radiometry=radiometry, clock=clock) if not isinstance(i, RowEnd)]
    assert [r.tile for r in rendered] == list(grid)
    for want, got in zip(expected, rendered):
        np.testing.assert_array_equal(got.rgb, reference_render.render(radiometry, want.data, want.nodata))
        np.testing.assert_array_equal(got.nodata, want.nodata)
    assert got.rgb.dtype == np.uint8 and got.rgb.shape == (size, size, 3)
    assert clock.total("radiometry") > 0 and any(r.empty for r in rendered) == any(e.empty for e in expected)


def test_closing_the_strip_reader_early_stops_its_threads_and_handles(tmp_path):
    path = tmp_path / "s.tif"
    _write(path, 600, 3300, 256)
    before = threading.active_count()
    with Scene(path, bands=(1, 2, 3)) as scene:
        reader = StripReader(scene, TileGrid(600, 3300, 256, 32), threads=2)
        items = iter(reader)
        next(items)
        items.close()  # what a scan does when a later stage fails
        assert threading.active_count() == before and all(handle.closed for handle in reader._handles)


def _write(path, width, height, blocks=None, bands=3):
    data = (np.arange(width * height * bands, dtype=np.uint64) % 65521).astype(np.uint16).reshape(bands, height, width)
    data[:, : height // 3, : width // 4] = 0
    profile = dict(driver="GTiff", width=width, height=height, count=bands, dtype="uint16", nodata=0, crs="EPSG:32633",
                   transform=from_origin(0, 0, 10, 10), compress="deflate")
    if blocks:
        profile.update(tiled=True, blockxsize=blocks, blockysize=blocks)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)


@pytest.mark.parametrize(
    "width,height,blocks,size,overlap,threads",
    [(1300, 1100, 256, 512, 64, 2), (1300, 1100, None, 512, 64, 2), (700, 900, 512, 256, 100, 3), (300, 200, 256, 512, 64, 2),
     (600, 3300, 256, 384, 96, 2)],  # several 1024-row strips, each decoded while the one before is cut
)
def test_strip_reader_gives_exactly_the_windowed_reads(tmp_path, width, height, blocks, size, overlap, threads):
    path = tmp_path / "s.tif"
    _write(path, width, height, blocks)
    with Scene(path, bands=(3, 1, 2)) as scene:
        grid = TileGrid(width, height, size, overlap)
        expected = [scene.read(t) for t in grid]
        items = list(StripReader(scene, grid, threads))
    tiles = [i for i in items if not isinstance(i, RowEnd)]
    ends = [i for i in items if isinstance(i, RowEnd)]
    assert [t.tile for t in tiles] == [t.tile for t in expected]
    for got, want in zip(tiles, expected):
        assert np.array_equal(got.data, want.data) and np.array_equal(got.nodata, want.nodata)
    rows = grid.row_starts
    assert [(e.row, e.next_top) for e in ends] == [(r, rows[r + 1] if r + 1 < len(rows) else None) for r in range(len(rows))]
    assert sum(e.tiles for e in ends) == len(grid)


def test_incremental_stitching_settles_the_same_objects_as_a_global_pass():
    rng = np.random.default_rng(9)
    objects = []
    for _ in range(120):
        x, y = (int(v) for v in rng.integers(0, 960, 2))
        w, h = (int(v) for v in rng.integers(8, 120, 2))
        box = (x, y, min(1000, x + w), min(1000, y + h))
        if not any(max(box[0], o[0][0]) < min(box[2], o[0][2]) + 3 and max(box[1], o[0][1]) < min(box[3], o[0][3]) + 3 for o in objects):
            objects.append((box, int(rng.integers(1, 3))))
    whole = _stitch(1000, 1000, 256, 64, objects)
    rows = _stitch(1000, 1000, 256, 64, objects, flush_rows=True)
    assert sorted(map(tuple, whole.boxes.tolist())) == sorted(map(tuple, rows.boxes.tolist()))
    assert len(whole) == len(objects)


def test_progress_counts_every_tile_once_including_skipped(tmp_path, square_model):
    path = tmp_path / "s.tif"
    _write(path, 1300, 1100, 256)
    ticks = []
    result = Scanner(square_model).scan(path, bands=(1, 2, 3), tile=256, overlap=32, progress=lambda done, total: ticks.append(done))
    assert ticks[-1] == result.tiles and result.skipped > 0 and ticks == sorted(set(ticks))


def test_bench_measures_every_stage_and_writes_json(make_scene, square_model, tmp_path, capsys):
    import json

    from minescan.cli import main

    path, truth = make_scene(width=1500, height=1100, objects=12, seed=5, tile=256, overlap=64)
    out = tmp_path / "bench.json"
    argv = ["bench", str(path), "--model", str(square_model), "--bands", "3,2,1", "--tile", "256", "--overlap", "64",
            "--batch", "2", "--threads", "1", "--workers", "1,2", "--json", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "efficiency" in printed and "CPU busy" in printed and f"wrote {out}" in printed
    assert "decode-once floor:" in printed and "bands 3,2,1 each read once" in printed
    payload = json.loads(out.read_text())
    results, floor = payload["results"], payload["decode_floor"]
    assert floor["bands"] == [3, 2, 1] and floor["seconds"] > 0 and floor["block"] == [512, 512]  # write_scene's blocks
    assert all(r["pipeline_over_decode_floor"] == r["pipeline_s"] / floor["seconds"] for r in results)
    assert [(r["batch"], r["threads"], r["workers"]) for r in results] == [(2, 1, 1), (2, 1, 2)]
    grid_tiles = len(TileGrid(1500, 1100, 256, 64))
    for r in results:
        assert r["tiles"] == grid_tiles and r["detections"] == len(truth.boxes) == 12
        assert set(r["alone_s"]) == {"read", "radiometry", "inference", "stitch", "write"}
        assert all(r["in_pipeline"][stage]["total_s"] > 0 for stage in ("read", "radiometry", "inference", "stitch"))
        assert r["efficiency"] == r["pipeline_s"] / max(r["alone_s"].values()) and 0 < r["cpu_busy"] <= 1.05
        assert r["peak_rss_mb"] > 0 and r["km2_per_s"] == r["km2"] / r["pipeline_s"]


def test_the_benchmarks_null_detector_is_in_the_contract_and_finds_nothing(make_scene, tmp_path):
    import importlib.util
    from pathlib import Path

    import onnx

    spec = importlib.util.spec_from_file_location("null_detector", Path(__file__).parents[1] / "benchmarks" / "null_detector.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    onnx.save(module.null_detector(), str(tmp_path / "null.onnx"))
    path, truth = make_scene(width=900, height=700, objects=5, seed=2)
    result = Scanner(tmp_path / "null.onnx").scan(path, bands=(3, 2, 1), tile=256, overlap=32)
    assert len(truth.boxes) == 5 and len(result.detections) == 0 and result.tiles == len(TileGrid(900, 700, 256, 32))
