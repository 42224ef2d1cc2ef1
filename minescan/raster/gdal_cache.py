"""GDAL's block cache during scans: sized for the scans running now, set and restored thread-safely.

GDAL has one block cache per process (``GDAL_CACHEMAX``; by default 5% of
RAM, 1.2 GB on a 24 GB machine).  The strip reader decodes every block once,
so a scan needs the cache only for the strip in flight; left at the default,
the cache would fill with blocks that are never read again (a full 10980 px
4-band uint16 scene decodes ~1 GB).  :func:`scan_block_cache` therefore sets
the cache to the sum of what the scans running at this moment need, and puts
back the size it found when the last one ends.

Two facts measured here (rasterio 1.4, GDAL 3.9; 3072 px GeoTIFF, 512 px
blocks) that the code depends on:

- ``GDAL_CACHEMAX`` set through rasterio as an *integer* is taken in bytes,
  not megabytes: an earlier version of the scan set "32" meaning 32 MB and got
  a 32-byte cache; the strip reader did not notice, but a decimated overview
  read (quicklooks, percentile stretch) took 109 s instead of 0.3 s under it;
- ``rasterio.Env`` saves and restores the option per ``with`` block, which
  is not safe across threads: concurrent scans in one process (a service)
  restored each other's value and left the 32-byte cache in place for good.
  Hence one lock and a count of active scans instead of nested environments.
"""

from __future__ import annotations

import itertools
import threading
from contextlib import contextmanager
from typing import Iterator

from rasterio.env import get_gdal_config, set_gdal_config

MIN_BYTES = 32 << 20
MAX_BYTES = 512 << 20

_lock = threading.Lock()
_needs: dict[int, int] = {}  # active scan -> bytes it needs
_found: object = None  # the cache size before the first active scan
_ids = itertools.count()


def scan_cache_bytes(width: int, bands: int, itemsize: int, block_rows: int) -> int:
    """The cache one scan needs: two strips' worth of blocks in flight, 32-512 MB."""
    row_bytes = width * bands * itemsize
    return int(min(MAX_BYTES, max(MIN_BYTES, 2 * row_bytes * max(block_rows, 256))))


@contextmanager
def scan_block_cache(nbytes: int) -> Iterator[None]:
    """GDAL's block cache holds at least what every running scan needs, while this one runs."""
    global _found
    key = next(_ids)
    with _lock:
        if not _needs:
            _found = get_gdal_config("GDAL_CACHEMAX")
        _needs[key] = nbytes
        set_gdal_config("GDAL_CACHEMAX", sum(_needs.values()))  # bytes (see the module docstring)
    try:
        yield
    finally:
        with _lock:
            del _needs[key]
            set_gdal_config("GDAL_CACHEMAX", sum(_needs.values()) if _needs else _found)
