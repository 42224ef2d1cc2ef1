"""The CUDA render + cut kernels (minescan._native_cuda): equal to the CPU kernels bit for bit, on a GPU.

Without a GPU only the first test runs: the module (built wherever CMake found
nvcc) says there is no device, in one line, instead of failing later in a scan.
``benchmarks/gpu_check.sh`` runs this file on the GPU machine.
"""

from __future__ import annotations

import numpy as np
import pytest

from minescan.raster.gpu_render import GpuRender, GpuRenderError, cuda_devices
from minescan.raster.grid import TileGrid
from minescan.raster.radiometry import histogram_match, reflectance_gain
from minescan.raster.strips import CutTile, _overlapping, _Piece
from rasterio.windows import Window

GPU = cuda_devices() > 0


@pytest.mark.skipif(GPU, reason="checks the no-GPU message; this machine has a GPU")
def test_without_a_gpu_the_render_stage_says_so_in_one_line():
    with pytest.raises(GpuRenderError) as caught:
        GpuRender(reflectance_gain(3), np.uint16, 3)
    message = str(caught.value)
    assert "\n" not in message
    assert "device 0" in message or "built without its CUDA kernels" in message


def test_wider_types_are_refused_with_the_type_named():
    with pytest.raises(GpuRenderError, match="float32"):
        GpuRender(reflectance_gain(3), np.float32, 3)


@pytest.mark.skipif(not GPU, reason="needs an NVIDIA GPU (run by benchmarks/gpu_check.sh)")
@pytest.mark.parametrize("dtype", ["uint16", "int16", "uint8"])
def test_gpu_render_and_cut_equal_the_cpu_kernels_bit_for_bit(dtype):
    rng = np.random.default_rng(3)
    width, rows, size, overlap = 1500, 640, 512, 64
    info = np.iinfo(dtype)
    data = rng.integers(info.min, info.max, (3, rows, width), dtype=np.int64, endpoint=True).astype(dtype)
    nodata = np.zeros((rows, width), bool)
    nodata[:, :200] = True
    nodata[100:300, 900:1000] = True
    valid = ~nodata
    for radiometry in (reflectance_gain(3, offset=-1000),
                       histogram_match(data, valid, (2, 50, 98), ((0.0, 120.0, 255.0),) * 3)):
        stage = GpuRender(radiometry, dtype, 3)
        stage.render_rows(data, nodata, 0)
        grid = TileGrid(width, rows, size, overlap)
        tiles = [t for t in grid if t.row == 0]
        got = stage.download(stage.cut(tiles))
        rgb, masked = radiometry.render(data, nodata)
        piece = _Piece(Window(0, 0, width, rows), rgb, nodata, masked)
        for index, tile in enumerate(tiles):
            np.testing.assert_array_equal(got[index], CutTile(tile, _overlapping(tile, [piece])).rgb)
