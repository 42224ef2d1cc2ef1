"""Pictures a person reads: the quicklook's drawing, its legend panel, scale bar and north arrow.

Everything is drawn with Pillow (``ImageDraw``; text in Pillow's bundled
FreeType font, ``ImageFont.load_default(size=...)``) on a uint8 RGB image
and written as PNG through :func:`save_png` (atomic).

A quicklook is two parts side by side:

* the **map** (left, at image pixel (0, 0), exactly the size of the base
  image it was drawn on): the scene, the quality mask's cells shaded (light
  grey wash plus grey diagonal hatch, so a white cloud still reads as
  masked), each detection outlined 2 px thick inside its box in its class's
  colour (:data:`COLOURS`, dashed where ``flagged``: mostly under the mask),
  and each ``highlight`` box (a site new since the last scan) in a 3 px red
  outline around it plus a red ring at least :data:`RING_MIN` px across, so
  a site of a few pixels still shows at 1024 px;
* the **panel** (right, dark): title (scene name, wrapped), subtitle (date,
  model), one legend line per class with its count, the mask/flag/new/dimmed
  entries that apply, a scale bar and a north arrow.  The panel is as tall as
  the map; when its content is taller, the image grows below the map, filled
  with the panel colour.  Nothing in the panel covers the imagery.

The scale bar's length is a round 1, 2 or 5 x 10^k m (:func:`nice_length`)
close to a fifth of the map's width, measured on the ground (geodesic, through
pyproj) at the scene centre.  The north arrow is turned by the angle between
the image's up and true north at the scene centre (:func:`north_angle`): for a
north-up UTM scene that is minus the grid convergence (:func:`grid_convergence`,
pyproj's sign convention: positive east of the central meridian in the northern
hemisphere, where true north lies west of grid north).  Without a CRS and
transform neither is drawn.
"""

from __future__ import annotations

import io
import math
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from minescan.results.atomic import write_atomically

# Class 1, 2, ...: yellow, cyan, magenta, orange, lime; repeats beyond.
COLOURS = ((255, 230, 0), (0, 230, 255), (255, 0, 200), (255, 128, 0), (128, 255, 0))
HIGHLIGHT = (255, 40, 40)  # new sites
RING_MIN = 28  # px: the smallest ring drawn around a highlighted site
PANEL = (28, 30, 34)  # the legend panel's background
TEXT = (240, 240, 240)
MUTED = (170, 174, 180)
MASK_WASH = (225, 225, 225)  # masked cells are blended towards this...
MASK_ALPHA = 0.5  # ...by this much...
MASK_HATCH = (50, 50, 50)  # ...and crossed by diagonal lines of this colour
MASK_HATCH_EVERY = 8  # px between hatch lines
DASH = (6, 4)  # px on, px off: a flagged detection's outline


def class_colour(class_id: int) -> tuple[int, int, int]:
    """The outline colour of 1-based ``class_id``."""
    return COLOURS[(int(class_id) - 1) % len(COLOURS)]


@lru_cache(maxsize=16)
def font(size: int) -> Any:
    """Pillow's bundled FreeType font at ``size`` px."""
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


# --- geometry: ground distances and north -------------------------------------------------------------------------

def _pyproj_crs(crs: Any) -> Any:
    from pyproj import CRS

    if hasattr(crs, "to_wkt") and not isinstance(crs, CRS):
        return CRS.from_wkt(crs.to_wkt())
    return CRS.from_user_input(crs)


def _to_lonlat(crs: Any) -> Any:
    from pyproj import Transformer

    crs = _pyproj_crs(crs)
    return crs, Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True)


def metres_per_pixel(crs: Any, transform: Any, col: float, row: float) -> float:
    """Ground metres (geodesic) per scene pixel along a row, at scene pixel (``col``, ``row``).

    Measured over 100 px either side, so it holds for projected and
    geographic CRSs alike (a UTM 10 m pixel is 10 m over the local scale factor: 10.004 m on the central meridian).
    """
    pcrs, to_ll = _to_lonlat(crs)
    span = 100.0
    x0, y0 = transform * (col - span, row)
    x1, y1 = transform * (col + span, row)
    (lon0, lon1), (lat0, lat1) = to_ll.transform([x0, x1], [y0, y1])
    _, _, dist = pcrs.get_geod().inv(lon0, lat0, lon1, lat1)
    return float(dist) / (2 * span)


def north_angle(crs: Any, transform: Any, col: float, row: float) -> float:
    """Degrees clockwise from the image's up to true north at scene pixel (``col``, ``row``).

    0 for a north-up geographic scene; minus :func:`grid_convergence` for a north-up projected one.
    """
    from pyproj import Transformer

    pcrs, to_ll = _to_lonlat(crs)
    from_ll = Transformer.from_crs(pcrs.geodetic_crs, pcrs, always_xy=True)
    x, y = transform * (col, row)
    lon, lat = to_ll.transform(x, y)
    step = 1e-3 if lat < 89.0 else -1e-3  # ~110 m along the meridian; southwards beside the pole (then flipped)
    qx, qy = from_ll.transform(lon, lat + step)
    a, b, _, d, e, _ = tuple(transform)[:6]
    det = a * e - b * d
    dx, dy = (qx - x) * math.copysign(1, step), (qy - y) * math.copysign(1, step)
    dcol, drow = (e * dx - b * dy) / det, (-d * dx + a * dy) / det
    return math.degrees(math.atan2(dcol, -drow))


def grid_convergence(crs: Any, x: float, y: float) -> float:
    """The meridian convergence at map point (``x``, ``y``) of ``crs`` in degrees, in pyproj's convention
    (``Proj.get_factors().meridian_convergence``): the clockwise angle from true north to grid north."""
    from affine import Affine

    return -north_angle(crs, Affine(1.0, 0.0, x, 0.0, -1.0, y), 0.0, 0.0)


def nice_length(metres: float) -> float:
    """The largest 1, 2 or 5 x 10^k metres not above ``metres`` (> 0)."""
    if not metres > 0:
        raise ValueError(f"a scale bar needs a positive length, got {metres}")
    power = 10.0 ** math.floor(math.log10(metres))
    for step in (5.0, 2.0, 1.0):
        if step * power <= metres * (1 + 1e-9):
            return step * power
    return power  # unreachable: 1 x 10^floor(log10) <= metres


def length_text(metres: float) -> str:
    """``"500 m"``, ``"2 km"``, ``"0.5 m"``..."""
    if metres >= 1000:
        km = metres / 1000
        return f"{km:g} km"
    return f"{metres:g} m"


def _xy(scale: float | tuple[float, float]) -> tuple[float, float]:
    """Image px per scene px in x and y, from one number or a pair."""
    if isinstance(scale, (int, float, np.floating, np.integer)):
        return float(scale), float(scale)
    return float(scale[0]), float(scale[1])


# --- drawing on the map ---------------------------------------------------------------------------------------------

def _pixel_box(box: Sequence[float], width: int, height: int) -> tuple[int, int, int, int] | None:
    """A scene box already scaled to image px, as inclusive pixel corners clipped to the image (None: outside)."""
    x0, y0 = int(np.floor(box[0])), int(np.floor(box[1]))
    x1, y1 = int(np.ceil(box[2])), int(np.ceil(box[3]))
    if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
        return None
    x0, y0 = max(x0, 0), max(y0, 0)
    x1, y1 = max(min(x1, width), x0 + 1), max(min(y1, height), y0 + 1)
    return x0, y0, x1 - 1, y1 - 1


def _dashed_rectangle(draw: Any, corners: tuple[int, int, int, int], colour: Any, width: int) -> None:
    """A rectangle outline ``width`` px thick inside ``corners`` (inclusive), drawn in dashes."""
    x0, y0, x1, y1 = corners
    on, off = DASH
    for start in range(x0, x1 + 1, on + off):
        end = min(start + on - 1, x1)
        draw.rectangle((start, y0, end, min(y0 + width - 1, y1)), fill=colour)
        draw.rectangle((start, max(y1 - width + 1, y0), end, y1), fill=colour)
    for start in range(y0, y1 + 1, on + off):
        end = min(start + on - 1, y1)
        draw.rectangle((x0, start, min(x0 + width - 1, x1), end), fill=colour)
        draw.rectangle((max(x1 - width + 1, x0), start, x1, end), fill=colour)


def shade_mask(image: np.ndarray, masked: np.ndarray, factor: int, scale: tuple[float, float]) -> np.ndarray:
    """``image`` with the True cells of ``masked`` (cells of ``factor`` scene px; ``scale`` image px per scene px
    in x, y) washed light grey and hatched; other pixels unchanged.  Returns a new array."""
    h, w = image.shape[:2]
    rows = np.minimum(((np.arange(h) + 0.5) / scale[1] // factor).astype(np.int64), masked.shape[0] - 1)
    cols = np.minimum(((np.arange(w) + 0.5) / scale[0] // factor).astype(np.int64), masked.shape[1] - 1)
    return shade(image, masked[rows[:, None], cols[None, :]])


def shade(image: np.ndarray, under: np.ndarray) -> np.ndarray:
    """``image`` washed light grey and hatched where ``under`` (bool [H, W]) is True; a new array."""
    out = image.copy()
    washed = image[under].astype(np.float32) * (1 - MASK_ALPHA) + np.asarray(MASK_WASH, np.float32) * MASK_ALPHA
    out[under] = washed.round().astype(np.uint8)
    yy, xx = np.nonzero(under)
    hatch = (xx + yy) % MASK_HATCH_EVERY == 0
    out[yy[hatch], xx[hatch]] = MASK_HATCH
    return out


def draw_map(base: np.ndarray, scale: float | tuple[float, float], boxes: np.ndarray, classes: np.ndarray, *,
             flagged: np.ndarray | None = None, highlight: np.ndarray | None = None, masked: Any = None) -> np.ndarray:
    """The map part of a quicklook, uint8 [H, W, 3] like ``base`` (which is not modified).

    ``scale``: image px per scene px (one number or x, y); ``boxes`` [N, 4] and ``highlight`` [M, 4] in scene px;
    ``classes`` [N] 1-based; ``flagged`` bool [N] draws those dashed; ``masked`` a
    :class:`~minescan.quality.mask.QualityMask` whose masked cells are shaded.
    """
    from PIL import Image, ImageDraw

    sx, sy = _xy(scale)
    image = np.ascontiguousarray(base, np.uint8)
    if masked is not None:
        image = shade_mask(image, np.asarray(masked.masked, bool), masked.factor, (sx, sy))
    h, w = image.shape[:2]
    picture = Image.fromarray(image, "RGB")
    draw = ImageDraw.Draw(picture)
    factors = np.array([sx, sy, sx, sy])
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    flags = np.zeros(len(boxes), bool) if flagged is None else np.asarray(flagged, bool).reshape(-1)
    if len(flags) != len(boxes):
        raise ValueError(f"flagged has {len(flags)} values for {len(boxes)} detections")
    for box, klass, flag in zip(boxes * factors, np.asarray(classes).reshape(-1), flags):
        corners = _pixel_box(box, w, h)
        if corners is None:
            continue
        if flag:
            _dashed_rectangle(draw, corners, class_colour(klass), 2)
        else:
            draw.rectangle(corners, outline=class_colour(klass), width=2)
    if highlight is not None:
        for box in np.asarray(highlight, np.float64).reshape(-1, 4) * factors:
            x0, y0, x1, y1 = box
            draw.rectangle((np.floor(x0) - 3, np.floor(y0) - 3, np.ceil(x1) + 2, np.ceil(y1) + 2), outline=HIGHLIGHT, width=3)
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            radius = max(RING_MIN / 2, math.hypot(x1 - x0, y1 - y0) / 2 + 8)
            draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), outline=HIGHLIGHT, width=2)
    return np.asarray(picture)


# --- the panel ------------------------------------------------------------------------------------------------------

LegendEntry = tuple  # (kind, colour, text): kind "box", "dashed", "highlight", "masked", "dimmed", "ramp", "edge"


def _wrap(text: str, face: Any, width: float) -> list[str]:
    """``text`` broken into lines no wider than ``width`` px (at spaces, underscores or anywhere as a last resort)."""
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        line = ""
        for char in paragraph:
            trial = line + char
            if face.getlength(trial) <= width or not line or char in " _":  # a separator may overhang
                line = trial
                continue
            cut = line.rfind(" ") if line.rfind(" ") > 0 else line.rfind("_")
            if cut > 0:
                lines.append(line[: cut + 1].rstrip())
                line = line[cut + 1 :] + char
            else:
                lines.append(line)
                line = char
        lines.append(line)
    return [line for line in lines if line] or [""]


def _swatch(canvas: Any, draw: Any, kind: str, colour: Any, box: tuple[int, int, int, int]) -> None:
    """The little picture left of a legend line."""
    x0, y0, x1, y1 = box
    if kind == "box":
        draw.rectangle(box, fill=(60, 64, 70), outline=colour, width=2)
    elif kind == "dashed":
        draw.rectangle(box, fill=(60, 64, 70))
        _dashed_rectangle(draw, box, colour, 2)
    elif kind == "highlight":
        draw.rectangle(box, fill=(60, 64, 70), outline=HIGHLIGHT, width=3)
        draw.ellipse((x0 - 3, y0 - 3, x1 + 3, y1 + 3), outline=HIGHLIGHT, width=2)
    elif kind == "masked":
        patch = np.full((y1 - y0 + 1, x1 - x0 + 1, 3), 90, np.uint8)
        shaded = shade_mask(patch, np.ones((1, 1), bool), 10**6, (1.0, 1.0))
        from PIL import Image

        canvas.paste(Image.fromarray(shaded, "RGB"), (x0, y0))
    elif kind == "dimmed":
        draw.rectangle(box, fill=colour, outline=(110, 110, 110), width=1)
    elif kind == "ramp":
        from minescan.results.quicklook import ramp_colour

        for x in range(x0, x1 + 1):
            p = 0.1 + 0.9 * (x - x0) / max(1, x1 - x0)
            draw.line((x, y0, x, y1), fill=ramp_colour(p))
    elif kind == "edge":
        draw.rectangle(box, fill=(60, 64, 70), outline=(255, 255, 255), width=1)
    else:
        raise ValueError(f"unknown legend swatch {kind!r}")


def _scale_bar(draw: Any, x: int, y: int, length_px: int, metres: float, face: Any, height: int) -> None:
    """A bar of four black/white blocks, ``length_px`` long, labelled with ``metres``, its top-left at x, y."""
    quarter = length_px / 4
    for k in range(4):
        fill = (250, 250, 250) if k % 2 == 0 else (20, 20, 20)
        draw.rectangle((round(x + k * quarter), y, round(x + (k + 1) * quarter) - 1, y + height - 1), fill=fill)
    draw.rectangle((x, y, x + length_px - 1, y + height - 1), outline=(250, 250, 250), width=1)
    draw.text((x, y + height + 3), "0", fill=TEXT, font=face)
    draw.text((x + length_px, y + height + 3), length_text(metres), fill=TEXT, font=face, anchor="ra")


def _north_arrow(draw: Any, cx: float, cy: float, radius: float, angle: float, face: Any) -> None:
    """An arrow head turned ``angle`` degrees clockwise from up, an "N" beyond its tip; centred at cx, cy."""
    theta = math.radians(angle)
    ux, uy = math.sin(theta), -math.cos(theta)  # the arrow's direction in image px (y down)
    px, py = -uy, ux  # across it
    tip = (cx + ux * radius, cy + uy * radius)
    tail = (cx - ux * radius, cy - uy * radius)
    left = (tail[0] + px * radius * 0.55, tail[1] + py * radius * 0.55)
    right = (tail[0] - px * radius * 0.55, tail[1] - py * radius * 0.55)
    notch = (cx - ux * radius * 0.45, cy - uy * radius * 0.45)
    draw.polygon([tip, left, notch], fill=(250, 250, 250))
    draw.polygon([tip, notch, right], fill=(120, 124, 130))
    draw.polygon([tip, left, notch, right], outline=(250, 250, 250))
    label = (cx + ux * (radius + face.size * 0.8), cy + uy * (radius + face.size * 0.8))
    draw.text(label, "N", fill=TEXT, font=face, anchor="mm")


def body_size(map_height: int) -> int:
    """The legend's text size in px for a map ``map_height`` px tall (12 to 20 px)."""
    return int(np.clip(round(map_height / 50), 12, 20))


def compose(map_image: np.ndarray, *, title: str = "", subtitle: str = "", entries: Sequence[LegendEntry] = (),
            metres_per_px: float | None = None, north: float | None = None) -> np.ndarray:
    """``map_image`` with the legend panel at its right: uint8 [H', W + panel, 3], H' >= H, the map at (0, 0).

    ``entries``: legend lines (kind, colour, text); ``metres_per_px``: ground metres per map px (None: no scale bar);
    ``north``: degrees clockwise from up to true north (None: no north arrow).
    """
    from PIL import Image, ImageDraw

    h, w = map_image.shape[:2]
    size = body_size(h)
    body, small, big = font(size), font(max(11, size - 3)), font(size + 6)
    pad = size
    panel_w = max(int(round(0.3 * w)), 15 * size)
    inner = panel_w - 2 * pad
    canvas = Image.new("RGB", (panel_w, max(h, 4000)), PANEL)
    draw = ImageDraw.Draw(canvas)
    y = pad
    for line in _wrap(title, big, inner) if title else []:
        draw.text((pad, y), line, fill=TEXT, font=big)
        y += round(big.size * 1.25)
    for line in _wrap(subtitle, body, inner) if subtitle else []:
        draw.text((pad, y), line, fill=MUTED, font=body)
        y += round(size * 1.3)
    y += size // 2
    draw.line((pad, y, panel_w - pad, y), fill=(70, 74, 80), width=1)
    y += size // 2 + 2
    sw = round(size * 1.3)
    for kind, colour, text in entries:
        lines = _wrap(text, body, inner - sw - size // 2)
        _swatch(canvas, draw, kind, colour, (pad, y + 1, pad + sw - 1, y + size))
        for line in lines:
            draw.text((pad + sw + size // 2, y), line, fill=TEXT, font=body)
            y += round(size * 1.35)
        y += size // 4
    if metres_per_px or north is not None:
        y += size
        draw.line((pad, y, panel_w - pad, y), fill=(70, 74, 80), width=1)
        y += size
    bottom = y
    if metres_per_px:
        room = inner - (3.0 * size + size if north is not None else 0)  # left of the north arrow
        metres = nice_length(min(w / 5 * 1.5, room) * metres_per_px)  # 1, 2 or 5 x 10^k: a fifth of the map, roughly
        length_px = max(1, round(metres / metres_per_px))
        _scale_bar(draw, pad, y + size // 2, length_px, metres, small, max(6, size // 2))
        bottom = max(bottom, y + size // 2 + max(6, size // 2) + 3 + round(small.size * 1.3))
    if north is not None:
        radius = size * 1.5
        cx, cy = panel_w - pad - radius, y + radius + size * 1.2
        _north_arrow(draw, cx, cy, radius, north, small)
        bottom = max(bottom, round(cy + radius + size * 1.4))
    height = max(h, bottom + pad)
    panel = np.asarray(canvas.crop((0, 0, panel_w, height)))
    out = np.empty((height, w + panel_w, 3), np.uint8)
    out[:] = PANEL
    out[:h, :w] = map_image
    out[:, w:] = panel
    out[:, w] = (70, 74, 80)  # a hairline between map and panel
    return out


def map_geometry(crs: Any, transform: Any, scene_width: int, scene_height: int,
                 image_width: int) -> tuple[float | None, float | None]:
    """(ground metres per map px, north angle) at the scene centre; (None, None) without a CRS or transform,
    or where pyproj cannot place the scene."""
    if crs is None or transform is None:
        return None, None
    try:
        col, row = scene_width / 2, scene_height / 2
        metres = metres_per_pixel(crs, transform, col, row) * scene_width / image_width
        north = north_angle(crs, transform, col, row)
    except Exception:  # noqa: BLE001 (a CRS pyproj cannot handle: draw the picture without them)
        return None, None
    if not (math.isfinite(metres) and metres > 0 and math.isfinite(north)):
        return None, None
    return metres, north


def draw_quicklook(base: np.ndarray, scale: float | tuple[float, float], boxes: np.ndarray, classes: np.ndarray, *,
                   labels: Mapping[int, str] | None = None, flagged: np.ndarray | None = None,
                   highlight: np.ndarray | None = None, highlight_label: str = "new", masked: Any = None,
                   title: str = "", subtitle: str = "", crs: Any = None, transform: Any = None,
                   scene_size: tuple[int, int] | None = None, extra: Sequence[LegendEntry] = ()) -> np.ndarray:
    """The whole quicklook: :func:`draw_map` of ``base`` plus the :func:`compose` panel; uint8 [H', W', 3].

    The legend lists every class of ``labels`` and every class detected (``"name: count"``), then the flagged,
    new-site and masked entries that apply, then ``extra``.  ``scene_size`` (width, height in scene px; default
    ``base``'s size over ``scale``) places the scene centre for the scale bar and north arrow.
    """
    sx, sy = _xy(scale)
    h, w = base.shape[:2]
    classes = np.asarray(classes).reshape(-1).astype(np.int64)
    picture = draw_map(base, (sx, sy), boxes, classes, flagged=flagged, highlight=highlight, masked=masked)
    labels = dict(labels or {})
    counts = {int(k): int(n) for k, n in zip(*np.unique(classes, return_counts=True))}
    entries: list[LegendEntry] = []
    for klass in sorted(set(labels) | set(counts)):
        name = labels.get(klass, f"class {klass}")
        entries.append(("box", class_colour(klass), f"{name}: {counts.get(klass, 0)}"))
    if not entries:
        entries.append(("box", (90, 90, 90), "no detections"))
    if flagged is not None and np.asarray(flagged, bool).any():
        entries.append(("dashed", (220, 220, 220), f"mostly masked: {int(np.asarray(flagged, bool).sum())}"))
    if highlight is not None:
        entries.append(("highlight", HIGHLIGHT, f"{highlight_label}: {len(np.asarray(highlight).reshape(-1, 4))}"))
    if masked is not None:
        entries.append(("masked", None, f"masked (clouds, shadows...); clear {100 * masked.clear_share:.0f} %"))
    entries.extend(extra)
    width, height = scene_size or (round(w / sx), round(h / sy))
    metres, north = map_geometry(crs, transform, width, height, w)
    return compose(picture, title=title, subtitle=subtitle, entries=entries, metres_per_px=metres, north=north)


def png_bytes(image: np.ndarray) -> bytes:
    """PNG bytes of a uint8 [H, W, 3] image."""
    from PIL import Image

    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected uint8 [H, W, 3], got {image.dtype} {list(image.shape)}")
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image), "RGB").save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def save_png(path: str | os.PathLike[str], image: np.ndarray) -> Path:
    """Write ``image`` (uint8 [H, W, 3]) as a PNG at ``path``, atomically; return the path."""
    write_atomically(path, png_bytes(image))
    return Path(path)
