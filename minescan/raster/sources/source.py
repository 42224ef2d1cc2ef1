"""A resolved input: what to scan and how, whatever the user pointed at.

Every input (a stacked GeoTIFF/COG, per-band files, a ``.SAFE`` product, a
STAC item) resolves to a :class:`Source`: one raster that
the scan plan opens (the input itself, or a VRT the run
writes that stacks or wraps it), the red, green and blue band indexes in
that raster, the DN offset and nodata value the product's metadata gives,
and a product id that names the scene's result files.  ``None`` means "the
product does not say": command-line options, the model's recipe or the
raster's own metadata decide, as for a single-scene scan.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from minescan.errors import MinescanError

# Sentinel-2 marks missing pixels with DN 0 (SPECIAL_VALUE_NODATA) but most
# distributions leave the raster's nodata value unset.
SENTINEL2_NODATA = 0.0


class SourceError(MinescanError):
    """An input that cannot be resolved to a scannable raster."""


@dataclass(frozen=True)
class Source:
    """One scene to scan (see the module docstring)."""

    input: str
    kind: str
    dataset: Path | str  # a local file, or a GDAL dataset name (/vsimem/..., a subdataset)
    product_id: str
    bands: tuple[int, int, int] | None = None
    offset: float | None = None
    nodata: float | None = None
    georeferenced: bool = True  # False: an in-memory array scanned in pixel coordinates
    scl: str | None = None  # the product's scene classification layer (an L2A .SAFE's SCL), a GDAL dataset name

    def open(self, *, bands: tuple[int, ...] | None = None, nodata: float | None = None, bands_origin: str | None = None):
        """The raster to scan, opened and checked (:class:`~minescan.raster.scene.Scene`)."""
        from minescan.raster.scene import Scene

        extra = {} if self.georeferenced else {"require_georef": False}
        return Scene(self.dataset, bands=bands, nodata=nodata, bands_origin=bands_origin, **extra)


def first_line(exc: BaseException) -> str:
    """An exception's message as one short line (GDAL's can span several)."""
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__


def safe_name(text: str) -> str:
    """``text`` made usable as a file name (letters, digits, ``.``, ``_``, ``-``)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")
    return name or "scene"


def common_stem(stems: list[str]) -> str:
    """What ``T33UUP_..._B02_10m`` and ``T33UUP_..._B03_10m`` share, cut at a separator; '' if nothing."""
    prefix = stems[0]
    for stem in stems[1:]:
        while not stem.startswith(prefix):
            prefix = prefix[:-1]
    cut = max(prefix.rfind(c) for c in "_-.")
    return prefix[:cut] if cut > 0 else ""
