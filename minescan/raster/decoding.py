"""Decoding a scene once: its decode blocks, GDAL's threads, and the decode-once floor.

A *decode block* is the unit a raster's codec decompresses as a whole: a
GeoTIFF's tile or strip, a JPEG 2000 file's tile (Sentinel-2 codes its 10 m
bands in 1024 px tiles).  GDAL reports the block of the dataset it opened,
which for a VRT (the stacks minescan writes for ``.SAFE`` products, band files
and STAC items) or a ``SENTINEL2_L2A:`` subdataset is the VRT's own 128 px
block, not that of the files behind it.  A read window that cuts a decode block
decodes that block again for each window it touches (and per dataset handle,
so per reader thread).  :func:`native_block` finds the block of the files
behind the name, and the strip reader (:mod:`minescan.raster.strips`) cuts its
strips and pieces on it.  Measured 2026-12-03 on a full 10980 px generated
L2A ``.SAFE`` (lossless JPEG 2000, 1024 px tiles; AMD EPYC, 2 cores, busy
with other jobs, so CPU seconds are the figure): strips of 1024 rows cut into
pieces on the VRT's 128 px grid: 84.5 CPU-s for the three RGB bands; cut on
the 1024 px JPEG 2000 tiles: 54.3 CPU-s; each band read once whole: 52-53 CPU-s.

Threads: the strip reader decodes pieces on its own threads (two per core),
each with its own handle.  GDAL's JPEG 2000 driver would add its own decoding
threads per call (``GDAL_NUM_THREADS``); on top of the reader's threads they
only oversubscribe the cores, so :func:`gdal_threads` gives each reader thread
its share of the cores, set as a thread-local GDAL option around its reads.

:func:`decode_floor` is the least time any scan of the scene can take on this
machine: each band the scan needs read once, in whole decode blocks, on every
core, nothing else.  ``minescan bench`` reports it beside the pipeline.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import PurePath
from typing import Iterator

import rasterio
from rasterio.enums import Interleaving
from rasterio.errors import RasterioError
from rasterio.windows import Window

# Drivers whose datasets are assembled from other rasters (GetFileList names them).
_ASSEMBLED = {"VRT", "SENTINEL2"}
_MAX_DEPTH = 3  # a minescan VRT -> a SENTINEL2 subdataset -> its JPEG 2000 files
# Blocks larger than this are not followed: a striped file whose "block" is its whole width x a few rows
# is handled by the strip reader's row rounding, and a pathological lcm would make strips huge.
_MAX_BLOCK = 4096


def native_block(dataset: str, own: tuple[int, int]) -> tuple[int, int]:
    """(rows, cols) the files behind ``dataset`` are decoded in; ``own`` is the block its own driver reports.

    For a plain raster that is ``own``.  For a VRT or a Sentinel-2 subdataset it is the
    least common multiple of the blocks of the rasters behind it (found recursively,
    metadata files skipped), when that stays below 4096 px; else ``own``.  A file that
    cannot be opened is skipped: the scan reports it when it reads there.
    """
    found = _source_blocks(dataset, 0)
    if not found:
        return own
    rows = math.lcm(*(b[0] for b in found))
    cols = math.lcm(*(b[1] for b in found))
    if rows > _MAX_BLOCK or cols > _MAX_BLOCK:
        return own
    return rows, cols


def _source_blocks(name: str, depth: int) -> list[tuple[int, int]]:
    """The decode blocks of the rasters behind ``name`` ([] for a plain raster, whose own block counts)."""
    try:
        with rasterio.open(name) as src:
            if src.driver not in _ASSEMBLED or depth >= _MAX_DEPTH:
                return []
            files = [f for f in src.files if f != name and PurePath(f).suffix.lower() not in (".xml", ".safe")]
    except RasterioError:
        return []
    blocks: list[tuple[int, int]] = []
    for file in files:
        inner = _source_blocks(file, depth + 1)
        if inner:
            blocks.extend(inner)
            continue
        try:
            with rasterio.open(file) as src:
                if src.count:
                    blocks.append(tuple(src.block_shapes[0]))  # type: ignore[arg-type]
        except RasterioError:
            continue
    return blocks


def gdal_threads(read_threads: int, cores: int) -> int:
    """GDAL's own decoding threads per reader thread: the reader's threads' share of the cores (at least 1)."""
    return max(1, cores // max(1, read_threads))


@contextmanager
def decoding_threads(count: int) -> Iterator[None]:
    """GDAL decodes with ``count`` threads in this thread (a thread-local GDAL option) while inside."""
    with rasterio.Env(GDAL_NUM_THREADS=str(count)):
        yield


def block_windows(width: int, height: int, block: tuple[int, int]) -> list[Window]:
    """The scene cut into whole decode blocks, row-major (edge blocks clipped to the scene)."""
    rows, cols = block
    return [Window(c, r, min(cols, width - c), min(rows, height - r))
            for r in range(0, height, rows) for c in range(0, width, cols)]


@dataclass(frozen=True)
class DecodeFloor:
    """The decode-once floor of a scene: wall and CPU seconds to read each needed band once on ``threads`` threads."""

    seconds: float
    cpu_seconds: float
    bands: tuple[int, ...]
    block: tuple[int, int]
    threads: int


def floor_jobs(bands: tuple[int, ...], windows: list[Window], interleaving: Interleaving | None) -> list[tuple[int | list[int], Window]]:
    """The decode-once floor's reads: (band, block) each, or (all the bands, block) for a pixel-interleaved file.

    A pixel-interleaved file codes every band of a block together: reading it band by band
    decodes each block once per band (measured on the 10980 px 4-band GeoTIFF, 2-core EPYC,
    2026-12-04: 4.1-5.0 s for three bands, slower than the scan it bounds; 1.7-2.0 s read together).
    """
    if interleaving == Interleaving.pixel:
        return [(list(bands), window) for window in windows]
    return [(band, window) for band in bands for window in windows]


def decode_floor(dataset: str, bands: tuple[int, ...], block: tuple[int, int], threads: int) -> DecodeFloor:
    """Read each of ``bands`` of ``dataset`` once, whole decode blocks at a time, on ``threads`` threads.

    Every (band, block) is one read on a thread of its own handle (every block with all
    the bands at once where the file is pixel-interleaved), with GDAL's
    own threads at the thread's share of the cores (:func:`gdal_threads`); no
    rendering, no tiles.  Windows of full block rows would be fewer calls but
    give fewer, longer pieces to balance across the threads.
    """
    import threading

    from minescan.defaults import available_cores

    with rasterio.open(dataset) as src:
        width, height = src.width, src.height
        jobs = floor_jobs(bands, block_windows(width, height, block), src.interleaving)
    local = threading.local()
    handles = []
    lock = threading.Lock()
    per_thread = gdal_threads(threads, available_cores())

    def read(job: tuple[int | list[int], Window]) -> None:
        with decoding_threads(per_thread):
            handle = getattr(local, "handle", None)
            if handle is None:
                handle = local.handle = rasterio.open(dataset)
                with lock:
                    handles.append(handle)
            handle.read(job[0], window=job[1])

    start, cpu = time.perf_counter(), time.process_time()
    try:
        with ThreadPoolExecutor(threads, thread_name_prefix="minescan-floor") as pool:
            for _ in pool.map(read, jobs):
                pass
    finally:
        for handle in handles:
            handle.close()
    return DecodeFloor(time.perf_counter() - start, time.process_time() - cpu, tuple(bands), block, threads)
