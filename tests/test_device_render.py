"""The scan's device path (``render``): raw tile rows to a render stage, batches bound to ONNX Runtime by address.

On a GPU the stage is :class:`GpuRender` (CUDA kernels, ``tests/test_native_cuda.py``); here its CPU
twin :class:`HostRender` drives the same path end to end: the reader's raw rows, the stage's one batch
buffer reused batch after batch, ONNX Runtime's I/O binding of that buffer by its address (split into
a fixed-batch model's batches by address), rows ending with their last batch.  It must find exactly
what the default CPU path finds.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from minescan.errors import SettingError
from minescan.raster.gpu_render import HostRender
from minescan.raster.grid import TileGrid
from minescan.raster.scene import Scene
from minescan.raster.strips import StripReader
from minescan.scan.scanner import Scanner

DEMO = "minescan/models/demo_detector.onnx"


def _same(a, b) -> None:
    assert len(a.detections) == len(b.detections) > 0
    np.testing.assert_array_equal(a.detections.boxes, b.detections.boxes)
    np.testing.assert_array_equal(a.detections.scores, b.detections.scores)
    np.testing.assert_array_equal(a.detections.classes, b.detections.classes)
    assert (a.tiles, a.skipped) == (b.tiles, b.skipped)


@pytest.mark.parametrize("model", ["square_model", "od_api_like_model"])
def test_the_device_path_finds_exactly_what_the_cpu_path_finds(request, make_scene, model):
    """Edge tiles, a nodata band (tiles skipped whole, tiles half nodata), batches split across rows."""
    path, truth = make_scene(width=2400, height=1500, objects=40, seed=5, nodata_width=1200)
    model_path = request.getfixturevalue(model)
    cpu = Scanner(model_path, backend="cpu").scan(path, batch=3)
    device = Scanner(model_path, backend="cpu", render=HostRender).scan(path, batch=3)
    _same(cpu, device)
    assert cpu.skipped > 0  # the nodata band left whole tiles out, on both paths


def test_the_demo_detector_on_the_device_path(tmp_path):
    from minescan.synthetic.mining import MiningSpec, write_mining_scene

    path = tmp_path / "mining.tif"
    write_mining_scene(path, MiningSpec(width=1800, height=1400, seed=3))
    _same(Scanner(DEMO, backend="cpu").scan(path), Scanner(DEMO, backend="cpu", render=HostRender).scan(path))


def test_raw_rows_are_the_scene_rows_each_tile_row_covers(make_scene):
    path, _ = make_scene(width=1300, height=1000, objects=5, nodata_width=200)
    with Scene(path, bands=(3, 1, 2)) as scene:
        grid = TileGrid(1300, 1000, 512, 64)
        rows = list(StripReader(scene, grid, 2).raw_rows())
        assert [r.end.row for r in rows] == list(range(grid.shape[0]))
        for r in rows:
            height = r.tiles[0].valid_height
            data, nodata = scene.read_window(__import__("rasterio").windows.Window(0, r.top, 1300, height))
            np.testing.assert_array_equal(r.data, data)
            np.testing.assert_array_equal(r.nodata, nodata)
            assert len(r.tiles) == grid.shape[1]
        assert rows[0].nodata[:, :60].all() and not rows[-1].nodata[-1].any()  # the slanted swath edge


def test_gpu_render_is_refused_in_one_line_where_it_cannot_run(square_model, tmp_path):
    with pytest.raises(SettingError, match=r"^render 'gpu': needs the CUDA backend \(this model runs on onnxruntime-cpu\)$"):
        Scanner(square_model, backend="cpu", render="gpu")
    with pytest.raises(SettingError, match="choose cpu or gpu"):
        Scanner(square_model, backend="cpu", render="tpu")
    with pytest.raises(SettingError, match="classifier gate"):
        Scanner(DEMO, backend="cpu", gate="minescan/models/demo_classifier.onnx", render=HostRender)
    done = subprocess.run([sys.executable, "-m", "minescan", "scan", "no-such-scene.tif", "--model", str(square_model),
                           "--backend", "cpu", "--render", "gpu", "--out", str(tmp_path / "d.gpkg")],
                          capture_output=True, text=True)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "minescan: error: --render 'gpu': needs the CUDA backend (this model runs on onnxruntime-cpu)"]
