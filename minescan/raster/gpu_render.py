"""Render + cut on the GPU: the CUDA kernels of ``native/cuda`` (``minescan._native_cuda``).

On a GPU a Faster R-CNN tile costs milliseconds, and the CPU's rendering and
cutting become the scan's bound.  :class:`GpuRender` moves them to the GPU:
raw 8 or 16 bit rows of a tile row are staged through pinned host memory and
uploaded on the stage's own CUDA stream, rendered there through the same
per-band tables as the CPU path (:meth:`Radiometry.render`), and the row's tiles
are cut into one contiguous uint8 NHWC batch in device memory, whose address
ONNX Runtime's CUDA provider can take through I/O binding with no copy back to
the host.  The kernels equal the CPU kernels bit for bit
(``tests/test_native_cuda.py``, run on a GPU).

The module is built when CMake finds a CUDA compiler (``pip install .`` on a
machine with the CUDA toolkit); without a GPU it still imports and reports
"no device".  Wider types (32/64 bit, floats) render on the CPU only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from minescan.errors import MinescanError
from minescan.raster.grid import Tile
from minescan.raster.radiometry import Radiometry


class GpuRenderError(MinescanError):
    """The GPU render stage cannot run here (no CUDA module, no device) or a CUDA call failed."""


def _module():
    try:
        from minescan import _native_cuda
    except ImportError as exc:
        raise GpuRenderError(
            "minescan was built without its CUDA kernels (CMake found no CUDA compiler when it was installed): "
            "reinstall it on a machine with the CUDA toolkit (nvcc) to render on the GPU"
        ) from exc
    return _native_cuda


def cuda_devices() -> int:
    """GPUs the CUDA kernels can use; 0 without the CUDA module, a driver or a device."""
    try:
        return int(_module().device_count())
    except GpuRenderError:
        return 0


@dataclass(frozen=True)
class DeviceBatch:
    """A rendered batch where a render stage left it: uint8 [n, size, size, bands] at ``pointer``.

    ``device_type`` is ONNX Runtime's name for the memory (``cuda``: a GPU's, on ``device``;
    ``cpu``: the host's, from :class:`HostRender`).  Valid until the stage's next ``cut``.
    """

    pointer: int
    shape: tuple[int, int, int, int]
    device: int
    device_type: str = "cuda"


class GpuRender:
    """One GPU's render + cut for one scene's rendering: raw tile rows in, device batches out."""

    def __init__(self, radiometry: Radiometry, dtype: np.dtype | str, bands: int, device: int = 0) -> None:
        dtype = np.dtype(dtype)
        if dtype.itemsize > 2 or dtype.kind not in "iu":
            raise GpuRenderError(f"the GPU renders 8 or 16 bit integer scenes; this one is {dtype}: render it on the CPU")
        self.dtype, self.bands, self.device = dtype, bands, device
        try:
            self._stage = _module().Stage(device)
            self._stage.set_tables(radiometry._tables(dtype, bands))
        except RuntimeError as exc:
            raise GpuRenderError(f"GPU render on CUDA device {device}: {exc}") from exc

    @property
    def device_name(self) -> str:
        return str(self._stage.device_name)

    def render_rows(self, data: np.ndarray, nodata: np.ndarray | None, row_off: int) -> None:
        """Upload and render full-width raw rows [B, rows, width] starting at scene row ``row_off``."""
        if data.dtype != self.dtype or data.shape[0] != self.bands:
            raise GpuRenderError(f"rows of {data.shape[0]} band(s) of {data.dtype}; this stage renders {self.bands} of {self.dtype}")
        raw = np.ascontiguousarray(data)
        if raw.dtype.kind == "i":
            raw = raw.view(np.dtype(f"u{raw.dtype.itemsize}"))  # tables are indexed by the bit pattern, as on the CPU
        mask = None if nodata is None else np.ascontiguousarray(nodata, dtype=bool)
        self._call(self._stage.render_rows, raw, mask, int(row_off))

    def cut(self, tiles: Sequence[Tile]) -> DeviceBatch:
        """Cut ``tiles`` (all inside the rendered rows, one size) into the device batch."""
        size = tiles[0].width
        rects = np.array([[t.col_off, t.row_off, t.valid_width, t.valid_height] for t in tiles], np.int64)
        self._call(self._stage.cut, rects, size)
        return DeviceBatch(int(self._stage.batch_pointer), (len(tiles), size, size, self.bands), self.device, "cuda")

    def synchronize(self) -> None:
        """Wait until the stage's stream has finished (before another stream, e.g. ONNX Runtime's, reads the batch)."""
        self._call(self._stage.synchronize)

    def download(self, batch: DeviceBatch) -> np.ndarray:
        """The batch copied to the host (waits for the stream): for checks and for a CPU model."""
        out = np.empty(batch.shape, np.uint8)
        self._call(self._stage.download, out)
        return out

    def _call(self, fn, *args):
        try:
            return fn(*args)
        except RuntimeError as exc:
            raise GpuRenderError(f"GPU render on CUDA device {self.device}: {exc}") from exc


class HostRender:
    """:class:`GpuRender`'s interface on the CPU, through the native CPU kernels: the same rows in, a host batch out.

    It lets the scan's device path (:func:`minescan.scan.stream.run_stream` with a render
    stage) run and be tested where there is no GPU, with ONNX Runtime binding the batch by its
    address exactly as it binds a GPU batch (device type ``cpu``).
    """

    def __init__(self, radiometry: Radiometry, dtype: np.dtype | str, bands: int, device: int = 0) -> None:
        self.radiometry, self.dtype, self.bands, self.device = radiometry, np.dtype(dtype), bands, device
        self._rows: tuple[np.ndarray, np.ndarray, int] | None = None
        self._batch = np.empty(0, np.uint8)

    device_name = "host (CPU kernels)"

    def render_rows(self, data: np.ndarray, nodata: np.ndarray | None, row_off: int) -> None:
        rgb, _ = self.radiometry.render(data, nodata)
        mask = np.zeros(data.shape[1:], bool) if nodata is None else np.ascontiguousarray(nodata, dtype=bool)
        self._rows = (rgb, mask, int(row_off))

    def cut(self, tiles: Sequence[Tile]) -> DeviceBatch:
        from minescan.raster.strips import CutTile, _Piece  # the CPU cut itself, as the CPU path runs it
        from rasterio.windows import Window

        assert self._rows is not None, "render_rows first"
        rgb, mask, top = self._rows
        piece = _Piece(Window(0, top, rgb.shape[1], rgb.shape[0]), rgb, mask, None)
        size = tiles[0].width
        shape = (len(tiles), size, size, self.bands)
        if self._batch.size < np.prod(shape):
            self._batch = np.empty(int(np.prod(shape)), np.uint8)
        batch = self._batch[: int(np.prod(shape))].reshape(shape)
        for slot, tile in enumerate(tiles):
            CutTile(tile, (piece,)).cut_into(batch[slot])
        return DeviceBatch(int(batch.ctypes.data), shape, self.device, "cpu")

    def download(self, batch: DeviceBatch) -> np.ndarray:
        return self._batch[: int(np.prod(batch.shape))].reshape(batch.shape).copy()

    def synchronize(self) -> None:
        """Nothing to wait for on the host."""
