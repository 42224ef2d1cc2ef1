"""Image chips of one site: before | after, for a person deciding whether an alert is real.

A chip is a square window around the site's box, read from each source
raster at its own resolution, stretched 2-98 % over the window's valid pixels
(:func:`~minescan.raster.radiometry.percentile_stretch`, as the quicklook
does) and resampled to ``size`` px (nearest when enlarging, so 10 m pixels stay
visible; GDAL's average when shrinking).  The window is the site's box grown
by ``context`` times its size on each side, at least :data:`MIN_WINDOW` scene
px across, centred on the box; where it leaves the raster, the chip is black
there (read is clipped to the raster and pasted into the window, so a site at
the edge of a scene still gets a chip).  The site's box is outlined in
``highlight_colour`` just outside it (2 px), so the site itself is not covered.

Panels sit side by side (before, then after; one panel without a before),
each with its label and a small scale bar under it, the title above.  A
``masked_*`` :class:`~minescan.quality.mask.QualityMask` (over that source's
scene pixels) shades its masked cells as the quicklook does.  The box is in map
coordinates of ``crs``; each source's CRS may differ (the box's corners are
reprojected, densified along its edges, and the chip covers their extent).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from minescan.errors import MinescanError
from minescan.results import pictures

MIN_WINDOW = 64  # scene px: the smallest window a chip shows


class ChipError(MinescanError):
    """A chip that cannot be made (a source that cannot be read, a box that is not a box)."""


@dataclass(frozen=True)
class ChipSource:
    """One raster to cut a chip from: ``bands`` (1-based red, green, blue), ``nodata`` (None: the file's), ``label``."""

    dataset: str | os.PathLike[str]  # any raster minescan scans (GeoTIFF, or the VRT a run writes for a .SAFE)
    bands: tuple[int, ...]
    nodata: float | None
    label: str  # e.g. "2026-11-27" or "before"


@dataclass(frozen=True)
class Panel:
    """One source's chip: ``image`` uint8 [size, size, 3], the site's box in chip px, ground metres per chip px."""

    image: np.ndarray
    site: tuple[float, float, float, float]
    metres_per_px: float | None
    label: str


def _window_of(box: Sequence[float], crs: Any, src: Any, context: float) -> tuple[int, int, int, tuple[float, ...]]:
    """(col0, row0, side) of the square window in ``src``'s pixels, and the site's box in them."""
    from rasterio.warp import transform_bounds

    x0, y0, x1, y1 = (float(v) for v in box)
    if not (x1 > x0 and y1 > y0):
        raise ChipError(f"a site's box is (xmin, ymin, xmax, ymax) with xmin < xmax and ymin < ymax, got {tuple(box)}")
    if crs is not None and src.crs is not None and src.crs != crs:
        x0, y0, x1, y1 = transform_bounds(crs, src.crs, x0, y0, x1, y1, densify_pts=21)
    inverse = ~src.transform
    corners = [inverse * (x, y) for x in (x0, x1) for y in (y0, y1)]
    cols, rows = [c for c, _ in corners], [r for _, r in corners]
    site = (min(cols), min(rows), max(cols), max(rows))
    extent = max(site[2] - site[0], site[3] - site[1])
    side = max(MIN_WINDOW, int(math.ceil(extent * (1 + 2 * context))))
    cx, cy = (site[0] + site[2]) / 2, (site[1] + site[3]) / 2
    return int(math.floor(cx - side / 2)), int(math.floor(cy - side / 2)), side, site


def read_panel(source: ChipSource, box: Sequence[float], crs: Any, *, size: int = 256, context: float = 1.5,
               masked: Any = None) -> Panel:
    """The chip of ``box`` (map coordinates of ``crs``) from ``source``: see the module docstring."""
    import rasterio
    from PIL import Image
    from rasterio.enums import Resampling
    from rasterio.errors import RasterioError
    from rasterio.windows import Window

    from minescan.raster.radiometry import percentile_stretch
    from minescan.raster.scene import gdal_reason

    try:
        with rasterio.open(source.dataset) as src:
            if not source.bands or min(source.bands) < 1 or max(source.bands) > src.count:
                raise ChipError(f"{os.fspath(source.dataset)}: has bands 1..{src.count}, a chip asked for {tuple(source.bands)}")
            col0, row0, side, site = _window_of(box, crs, src, context)
            n = min(side, size)  # px read across the window; enlarged to ``size`` afterwards
            f = side / n
            data = np.zeros((len(source.bands), n, n), src.dtypes[source.bands[0] - 1])
            valid = np.zeros((n, n), bool)
            c0, r0 = max(col0, 0), max(row0, 0)
            c1, r1 = min(col0 + side, src.width), min(row0 + side, src.height)
            if c1 > c0 and r1 > r0:
                d0, e0 = int(round((c0 - col0) / f)), int(round((r0 - row0) / f))
                d1, e1 = max(d0 + 1, int(round((c1 - col0) / f))), max(e0 + 1, int(round((r1 - row0) / f)))
                part = src.read(list(source.bands), window=Window(c0, r0, c1 - c0, r1 - r0), out_shape=(
                    len(source.bands), e1 - e0, d1 - d0), resampling=Resampling.average if f > 1 else Resampling.nearest)
                data[:, e0:e1, d0:d1] = part
                nodata = source.nodata if source.nodata is not None else src.nodata
                inside = np.ones(part.shape[1:], bool)
                if nodata is not None:
                    inside = ~np.all(part == np.asarray(nodata, part.dtype), axis=0) if not math.isnan(nodata) \
                        else ~np.all(np.isnan(part), axis=0)
                valid[e0:e1, d0:d1] = inside
            metres = None
            if src.crs is not None:
                try:
                    metres = pictures.metres_per_pixel(src.crs, src.transform, col0 + side / 2, row0 + side / 2) * side / size
                except Exception:  # noqa: BLE001 (a CRS pyproj cannot handle: no scale bar)
                    metres = None
    except RasterioError as exc:
        raise ChipError(f"{os.fspath(source.dataset)}: cannot cut a chip ({gdal_reason(exc)})") from exc
    if valid.any() and data.dtype.kind in "uif":
        image = percentile_stretch(data, valid, 2.0, 98.0).apply(data, ~valid)
    else:
        image = np.zeros((n, n, 3), np.uint8)
    if image.shape[2] != 3:
        image = np.repeat(image[..., :1], 3, axis=2)
    if n != size:
        image = np.asarray(Image.fromarray(image, "RGB").resize((size, size), Image.Resampling.NEAREST))
    if masked is not None:
        centres = col0 + (np.arange(size) + 0.5) * side / size, row0 + (np.arange(size) + 0.5) * side / size
        cols, rows = (np.floor(c / masked.factor).astype(np.int64) for c in centres)
        ok_c = (cols >= 0) & (cols < masked.masked.shape[1])
        ok_r = (rows >= 0) & (rows < masked.masked.shape[0])
        under = np.zeros((size, size), bool)
        under[np.ix_(ok_r, ok_c)] = np.asarray(masked.masked, bool)[np.ix_(rows[ok_r], cols[ok_c])]
        image = pictures.shade(image, under)
    k = size / side
    chip_site = ((site[0] - col0) * k, (site[1] - row0) * k, (site[2] - col0) * k, (site[3] - row0) * k)
    return Panel(image, chip_site, metres, source.label)


def compose_chip(panels: Sequence[Panel], *, title: str = "", highlight_colour: tuple[int, int, int] = (255, 40, 40)
                 ) -> np.ndarray:
    """Panels side by side, each site outlined, labels and scale bars under them, ``title`` above; uint8 [H, W, 3]."""
    from PIL import Image, ImageDraw

    size = panels[0].image.shape[0]
    text = 14 if size >= 200 else 12
    body, small, big = pictures.font(text), pictures.font(text - 2), pictures.font(text + 3)
    pad = 12
    width = len(panels) * size + (len(panels) + 1) * pad
    lines = pictures._wrap(title, big, width - 2 * pad) if title else []
    top = pad + len(lines) * round(big.size * 1.25) + (pad // 2 if lines else 0)
    height = top + size + pad // 2 + round(text * 1.4) + 8 + round(small.size * 1.4) + pad
    canvas = Image.new("RGB", (width, height), pictures.PANEL)
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(lines):
        draw.text((pad, pad + i * round(big.size * 1.25)), line, fill=pictures.TEXT, font=big)
    for i, panel in enumerate(panels):
        x = pad + i * (size + pad)
        canvas.paste(Image.fromarray(panel.image, "RGB"), (x, top))
        sx0, sy0, sx1, sy1 = panel.site
        outline = (x + math.floor(sx0) - 2, top + math.floor(sy0) - 2, x + math.ceil(sx1) + 1, top + math.ceil(sy1) + 1)
        draw.rectangle(outline, outline=highlight_colour, width=2)
        draw.rectangle((x, top, x + size - 1, top + size - 1), outline=(70, 74, 80), width=1)
        y = top + size + pad // 2
        draw.text((x, y), panel.label, fill=pictures.TEXT, font=body)
        if panel.metres_per_px:
            metres = pictures.nice_length(size / 3 * panel.metres_per_px)
            length = max(1, round(metres / panel.metres_per_px))
            by = y + round(text * 1.4)
            draw.rectangle((x, by, x + length - 1, by + 4), fill=(250, 250, 250))
            draw.text((x + length + 6, by - 3), pictures.length_text(metres), fill=pictures.MUTED, font=small)
    return np.asarray(canvas)


def write_chip(path: str | os.PathLike[str], box: Sequence[float], crs: Any, *, after: ChipSource,
               before: ChipSource | None = None, title: str = "", highlight_colour: tuple[int, int, int] = (255, 40, 40),
               size: int = 256, context: float = 1.5, masked_after: Any = None, masked_before: Any = None) -> Path:
    """Write the chip of the site ``box`` ((xmin, ymin, xmax, ymax) in ``crs``) as a PNG at ``path``, atomically.

    Two panels, ``before`` | ``after``, or ``after`` alone; see the module docstring.
    """
    if size < 32:
        raise ChipError(f"a chip is at least 32 px across, got size {size}")
    if not context >= 0:
        raise ChipError(f"a chip's context is a share of the site's size >= 0, got {context}")
    panels = [read_panel(after, box, crs, size=size, context=context, masked=masked_after)]
    if before is not None:
        panels.insert(0, read_panel(before, box, crs, size=size, context=context, masked=masked_before))
    return pictures.save_png(path, compose_chip(panels, title=title, highlight_colour=highlight_colour))
