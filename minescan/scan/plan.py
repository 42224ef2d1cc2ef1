"""The scan plan: every setting of one scan resolved once, with where it came from.

A scan is described by three things: what the caller asked for
(:class:`ScanOptions`: a command-line option or an API argument; None = not
asked), the model (its fixed input size and the metadata its owner exported:
recipe bands, gain, offset, scale; ``drop_parts``), and the scene (a product's
band layout, offset and nodata, the raster's own nodata, data type, colour
interpretation).  :func:`plan_scan` resolves them into a :class:`ScanPlan` in
one place, in this order for each setting:

====================  ==============================================================
setting               order (first that has a value wins)
====================  ==============================================================
bands                 product (a stack minescan built), option, model, raster, -
nodata                option, product, raster, none
normalisation         option (--stretch; --gain forces the fixed gain), model's
                      recipe (stretch, standardize, histogram_match), fixed gain
gain                  option, model, default
offset                option, product (if applied), model, default (data units)
scale                 option, model (integer data), raster (float data: reflectance
                      0-1 -> 1, DN -> default), default
tile                  model (fixed input size; an option that disagrees is an
                      error), option, default
overlap, batch,
score_threshold, iou  option, default
drop_parts            option, model, default (off)
read_threads          option, default (two per core, at most 8)
labels                option, model, class ids
shift_threshold       option, default (the guard needs the model's input statistics)
gate_threshold        option, default (only with a gate: :mod:`minescan.scan.gate`)
====================  ==============================================================

Every entry point (the command line for one scene or a run, the Python API,
``bench``, ``demo``) builds its plan here; :meth:`ScanPlan.explain` prints it
(``minescan scan --dry-run``).  The defaults live in :mod:`minescan.defaults`.
Option ranges are checked when :class:`ScanOptions` is made, so the API and
the command line refuse the same values with the same one-line error
(:class:`OptionError`, which names the setting as the API spells it; the
command line translates the name into its flag).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any, Mapping

import numpy as np

from minescan.defaults import DEFAULTS
from minescan.errors import MinescanError, SettingError
from minescan.model.statistics import InputStatistics
from minescan.raster.grid import TileGrid, TileGridError
from minescan.raster.radiometry import (
    Radiometry, default_scale, histogram_match, passthrough, percentile_stretch, reflectance_gain, standardize,
)
from minescan.raster.scene import Scene
from minescan.raster.sources.source import Source
from minescan.quality.settings import QualityPlan
from minescan.scan.gate import GatePlan
from minescan.scan.stitch import StitchSettings

OPTION = "option"
MODEL = "model"
PRODUCT = "product"
RASTER = "raster"
DEFAULT = "default"


class OptionError(SettingError):
    """A scan setting outside its range (:class:`~minescan.errors.SettingError`: named as the API spells it)."""

    connector = " is out of range: "


def _check(name: str, value: Any, ok: bool, requirement: str) -> None:
    if value is not None and not ok:
        raise OptionError(name, value, requirement)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class ScanOptions:
    """What the caller asked for; None means "not asked": the plan takes it from the model, the scene or the defaults.

    Ranges are checked here, so a bad value fails before any file is opened.
    """

    bands: tuple[int, ...] | None = None
    tile: int | None = None
    overlap: int | None = None
    batch: int | None = None
    score_threshold: float | None = None
    gain: float | None = None
    offset: float | None = None
    scale: float | None = None
    stretch: tuple[float, float] | None = None
    nodata: float | None = None
    iou: float | None = None
    class_agnostic: bool = False
    drop_parts: float | None = None
    read_threads: int | None = None
    product_offset: bool = True  # apply the offset a product declares (Sentinel-2 baseline >= 04.00)
    labels: Mapping[int, str] | None = None
    shift_threshold: float | None = None
    stride: int | None = None  # classifiers: px between windows (default half the window)
    gate_threshold: float | None = None  # with a gate: tiles scoring below this skip the detector
    # Quality mask (minescan.quality.settings): None = the product's SCL when it has one; "scl", "none" or a raster path.
    mask: str | None = None
    mask_classes: tuple[int, ...] | None = None  # SCL classes masked (default minescan.quality.scl.DEFAULT_MASKED)
    skip_masked: float | None = None  # tiles at least this share masked are not scanned
    max_masked: float | None = None  # detections more than this share masked are flagged or dropped
    masked: str | None = None  # "flag" or "drop"
    # Concession boundaries (minescan.context.concessions): each detection gets the one it lies in and the share inside.
    concessions: str | None = None
    concession_field: str | None = None

    def __post_init__(self) -> None:
        if self.bands is not None:
            object.__setattr__(self, "bands", tuple(self.bands))
            _check("bands", self.bands, len(self.bands) == 3 and all(isinstance(b, int) and b >= 1 for b in self.bands),
                   "give 3 band numbers (red, green, blue), 1-based")
        _check("tile", self.tile, isinstance(self.tile, int) and self.tile >= 16, "a tile is at least 16 px")
        _check("overlap", self.overlap, isinstance(self.overlap, int) and self.overlap >= 0, "must be 0 or more px")
        _check("batch", self.batch, isinstance(self.batch, int) and self.batch >= 1, "must be at least 1")
        _check("score_threshold", self.score_threshold, _finite(self.score_threshold) and 0 <= self.score_threshold <= 1,
               "must be in [0, 1]")
        _check("gain", self.gain, _finite(self.gain) and self.gain > 0, "must be positive")
        _check("offset", self.offset, _finite(self.offset), "must be a finite number")
        _check("scale", self.scale, _finite(self.scale) and self.scale > 0, "must be positive")
        if self.stretch is not None:
            object.__setattr__(self, "stretch", tuple(self.stretch))
            _check("stretch", self.stretch, len(self.stretch) == 2 and all(_finite(v) for v in self.stretch)
                   and 0 <= self.stretch[0] < self.stretch[1] <= 100, "percentiles LOW,HIGH with 0 <= LOW < HIGH <= 100")
        _check("nodata", self.nodata, isinstance(self.nodata, (int, float)) and not isinstance(self.nodata, bool), "must be a number")
        _check("iou", self.iou, _finite(self.iou) and 0 < self.iou <= 1, "must be in (0, 1]")
        _check("drop_parts", self.drop_parts, _finite(self.drop_parts) and 0 <= self.drop_parts <= 1,
               "must be in [0, 1] (0 = off)")
        _check("stride", self.stride, isinstance(self.stride, int) and self.stride >= 1, "must be at least 1 px")
        _check("shift_threshold", self.shift_threshold, _finite(self.shift_threshold) and self.shift_threshold > 0,
               "must be positive")
        _check("gate_threshold", self.gate_threshold, _finite(self.gate_threshold) and 0 <= self.gate_threshold <= 1,
               "must be in [0, 1]")
        _check("read_threads", self.read_threads, isinstance(self.read_threads, int) and self.read_threads >= 1,
               "must be at least 1")
        if self.mask is not None:
            object.__setattr__(self, "mask", str(self.mask))
            _check("mask", self.mask, bool(self.mask.strip()), "give scl, none or a mask raster")
        if self.mask_classes is not None:
            from minescan.quality.scl import check_classes

            object.__setattr__(self, "mask_classes", check_classes(self.mask_classes))
            _check("mask_classes", self.mask_classes, bool(self.mask_classes), "give at least one SCL class")
            _check("mask_classes", ",".join(map(str, self.mask_classes)), self.mask != "none", "select classes of a mask, "
                   "but the mask is off (none)")
        _check("skip_masked", self.skip_masked, _finite(self.skip_masked) and 0 < self.skip_masked <= 1, "must be in (0, 1]")
        _check("max_masked", self.max_masked, _finite(self.max_masked) and 0 <= self.max_masked <= 1, "must be in [0, 1]")
        _check("masked", self.masked, self.masked in ("flag", "drop"), "choose flag or drop")
        if self.concessions is not None:
            object.__setattr__(self, "concessions", str(self.concessions))
        _check("concession_field", self.concession_field, self.concessions is not None,
               "names a field of the concessions layer, but no concessions are given")

    def merged(self, **changes: Any) -> "ScanOptions":
        """These options with ``changes`` (None values ignored), checked again."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


OPTION_NAMES = tuple(f.name for f in fields(ScanOptions))


@dataclass(frozen=True)
class ModelFacts:
    """What the plan needs to know of a loaded model (:class:`~minescan.engine.Detector`)."""

    name: str
    backend: str
    notice: str | None
    threads: int | None
    workers: int
    fixed_size: int | None
    metadata: Any  # ModelMetadata
    task: str = "detector"  # or "classifier" (minescan.model.contract.model_task)
    # Why this many calls x threads (minescan.engine.memory_budget.CpuSplit.reason): the model's measured
    # cost and the memory budget; None when the backend has no choice to make (a GPU, a TensorRT engine).
    split_reason: str | None = None

    @classmethod
    def of(cls, detector: Any, name: str) -> "ModelFacts":
        sig = detector.signature
        if (sig.height or sig.width) and sig.height != sig.width:
            raise TileGridError(f"{name}: model input is {sig.height}x{sig.width} px; minescan tiles are square")
        split = getattr(detector, "split", None)
        return cls(name, detector.backend, detector.notice, getattr(detector, "threads", None), detector.concurrency,
                   sig.height or None, detector.metadata, getattr(detector, "task", "detector"),
                   getattr(split, "reason", None))

    def describe_split(self, why: bool = True) -> str:
        """``2 concurrent call(s) x 1 thread(s) (model: 0.03 s/tile, 15 MiB per call; budget 12 GiB [default: ...])``."""
        if not self.threads:
            return "1 call at a time"
        reason = f" ({self.split_reason})" if why and self.split_reason else ""
        return f"{self.workers} concurrent call(s) x {self.threads} thread(s){reason}"


@dataclass(frozen=True)
class ScanPlan:
    """One scan, fully resolved: what is read, how it is rendered, tiled, run, stitched and written.

    ``origins`` names where each setting came from (``option``, ``model``,
    ``product``, ``raster`` or ``default``, sometimes with a reason).
    """

    source: Source
    width: int
    height: int
    dtype: str
    crs: Any
    transform: Any
    bands: tuple[int, ...]
    band_names: tuple[str, ...]
    nodata: float | None
    radiometry: Radiometry
    rendering: str  # one line: how pixel values become the model's uint8
    tile: int
    overlap: int
    tiles: int
    grid_shape: tuple[int, int]
    nodata_tiles: int | None  # tiles that are nodata in the scene's overview (an estimate), None if not estimated
    batch: int
    score_threshold: float
    stitch: StitchSettings
    read_threads: int
    model: ModelFacts
    labels: Mapping[int, str]
    origins: Mapping[str, str] = field(default_factory=dict)
    output: str | None = None
    # Domain-shift guard: how far the scene's rendered input lies from the model's training input
    # (minescan.model.statistics); None when the model records no input statistics.
    input_shift: float | None = None
    shift_threshold: float = DEFAULTS.shift_threshold
    gate: GatePlan | None = None  # the classifier gate (minescan.scan.gate); None: every tile is detected
    quality: QualityPlan | None = None  # the quality mask and the tiles it keeps from the detector; None: no mask
    concessions: Any = None  # a minescan.scan.assess.ConcessionSource: the layer each detection is joined with

    @property
    def skip(self) -> frozenset[tuple[int, int]]:
        """The (row, col) of tiles the quality mask keeps from the detector (not scanned)."""
        return self.quality.skip if self.quality is not None else frozenset()

    @property
    def shifted(self) -> bool:
        """Whether the guard flags this scene: its input lies beyond the threshold from the training input."""
        return self.input_shift is not None and self.input_shift > self.shift_threshold

    def shift_note(self) -> str:
        """One line on the guard's verdict (for the plan, warnings and summaries)."""
        if self.input_shift is None:
            return "not measured: the model records no input statistics (minescan export --calibration adds them)"
        verdict = "BEYOND" if self.shifted else "within"
        return f"{self.input_shift:.2f}, {verdict} the threshold {self.shift_threshold:g} [{self.origins.get('shift_threshold', DEFAULT)}]"

    @property
    def scene_name(self) -> str:
        """The name a result carries: the product id, or a plain raster's file name."""
        if self.source.kind == "raster":
            from pathlib import Path

            return Path(self.source.dataset).name
        return self.source.product_id

    @property
    def grid(self) -> TileGrid:
        return TileGrid(self.width, self.height, self.tile, self.overlap)

    def open_scene(self) -> Scene:
        """The scene this plan reads, opened with the resolved bands and nodata."""
        return self.source.open(bands=self.bands, nodata=self.nodata)

    def result_settings(self) -> dict[str, Any]:
        """Everything the result depends on besides the model and the input (for a run's fingerprint).

        Speed-only settings (batch, reader threads, workers) are left out.
        """
        return {
            "bands": list(self.bands), "nodata": self.nodata, "rendering": self.rendering,
            "radiometry": [list(self.radiometry.low), list(self.radiometry.high), self.radiometry.passthrough]
            + ([[[list(xs), list(ys)] for xs, ys in self.radiometry.curves]] if self.radiometry.curves else []),
            "tile": self.tile, "overlap": self.overlap, "score_threshold": self.score_threshold,
            "stitch": [self.stitch.iou_threshold, self.stitch.containment, self.stitch.edge_tolerance,
                       self.stitch.class_agnostic, self.stitch.drop_parts],
            "labels": {str(k): v for k, v in sorted(self.labels.items())},
        } | ({"gate": [self.gate.name, self.gate.threshold, self.gate.window, self.gate.stride]} if self.gate else {}) \
          | ({"quality": self.quality.settings()} if self.quality else {}) \
          | ({"concessions": self.concessions.settings()} if self.concessions else {})

    def explain(self) -> str:
        """The plan as readable lines, each value with where it came from (``minescan scan --dry-run``)."""
        o = self.origins

        def at(key: str) -> str:
            return f"[{o[key]}]" if key in o else ""

        crs = "no CRS" if self.crs is None else (f"EPSG:{self.crs.to_epsg()}" if self.crs.to_epsg() else self.crs.to_string()[:60])
        pixel = abs(self.transform.a) if self.transform is not None else 0
        names = f" ({', '.join(self.band_names)})" if any(self.band_names) else ""
        rows, cols = self.grid_shape
        skipped = "" if self.nodata_tiles is None else f", about {self.nodata_tiles} all nodata (skipped; from the overview)"
        labels = ", ".join(f"{k} {v}" for k, v in sorted(self.labels.items())) or "class ids (no names)"
        threads = self.model.describe_split(why=False)
        parts = "off" if not self.stitch.drop_parts else f">= {self.stitch.drop_parts:g} inside a larger box of another class"
        lines = [
            ("source", f"{self.source.input} ({self.source.kind}) -> {self.source.dataset}"),
            ("raster", f"{self.width} x {self.height} px, {self.dtype}, {crs}, {pixel:g} m pixels"),
            ("bands", f"{','.join(map(str, self.bands))}{names} {at('bands')}"),
            ("nodata", f"{'none' if self.nodata is None else f'{self.nodata:g}'} {at('nodata')}"),
            ("radiometry", self.rendering),
            ("tiles", f"{self.tile} px {at('tile')}, overlap {self.overlap} px {at('overlap')}: {rows} x {cols} = {self.tiles} tiles{skipped}"),
            ("inference", f"{self.model.name} on {self.model.backend}, {threads}, batch {self.batch} {at('batch')}, "
                          f"score >= {self.score_threshold:g} {at('score_threshold')}"),
            *([("calls", self.model.split_reason)] if self.model.split_reason else []),
            *([("gate", self.gate.describe() if self.gate else "none: every tile goes to the detector")]
              if self.model.task != "classifier" else []),
            ("reading", f"{self.read_threads} reader thread(s) {at('read_threads')}"),
            ("stitching", f"IoU {self.stitch.iou_threshold:g} {at('iou')} inside the tiles' common window, "
                          f"{'class-agnostic' if self.stitch.class_agnostic else 'per class'}, drop parts {parts} {at('drop_parts')}"),
            ("labels", f"{labels} {at('labels')}"),
            ("input shift", self.shift_note()),
            ("quality", self.quality.describe() if self.quality else f"no mask: {o.get('mask', 'none')}"),
            *([("concessions", self.concessions.describe())] if self.concessions else []),
        ]
        if self.output:
            lines.append(("output", self.output))
        return "\n".join(f"{name:<11} {text.rstrip()}" for name, text in lines)


def input_shift(radiometry: Radiometry, reference: InputStatistics, sample: Any) -> float | None:
    """The scene's input shift against ``reference``: its statistics ``sample`` rendered with ``radiometry``."""
    valid = ~sample.nodata
    if not valid.any():
        return None
    rgb = radiometry.apply(sample.data, sample.nodata)
    return reference.shift(InputStatistics.measure(rgb, valid))


def _pick(*candidates: tuple[str, Any]) -> tuple[Any, str]:
    """The first candidate (origin, value) with a value; (None, '') when none has one."""
    for origin, value in candidates:
        if value is not None:
            return value, origin
    return None, ""


def _nodata_tiles(scene: Scene, grid: TileGrid) -> int | None:
    """How many tiles the scene's decimated overview shows as entirely nodata (an estimate for the plan)."""
    try:
        sample = scene.overview(512)
    except MinescanError:
        return None
    mask = sample.nodata
    if not mask.any():
        return 0
    fy, fx = mask.shape[0] / scene.height, mask.shape[1] / scene.width
    count = 0
    for tile in grid:
        y0, x0 = int(tile.row_off * fy), int(tile.col_off * fx)
        y1 = max(y0 + 1, math.ceil((tile.row_off + tile.valid_height) * fy))
        x1 = max(x0 + 1, math.ceil((tile.col_off + tile.valid_width) * fx))
        count += bool(mask[y0:y1, x0:x1].all())
    return count


class _Sample:
    """The scene's statistics sample, read at most once per plan (:meth:`Scene.statistics_sample`)."""

    def __init__(self, scene: Scene, mask: Any = None) -> None:
        self._scene, self._data, self._mask = scene, None, mask

    def __call__(self) -> Any:
        if self._data is None:
            # Clouds would set the stretch and the guard's statistics: the mask's cells are left out.
            self._data = self._scene.statistics_sample(exclude=self._exclude if self._mask is not None else None)
        return self._data

    def _exclude(self, window: Any, shape: Any) -> np.ndarray:
        from minescan.quality.mask import window_mask

        return window_mask(self._mask, window.col_off, window.row_off, window.width, window.height, tuple(shape))


def _radiometry(scene: Scene, options: ScanOptions, source: Source, recipe: Any, origins: dict[str, str],
                statistics: _Sample) -> tuple[Radiometry, str]:
    """How the scene's values become uint8 (see the table in the module docstring), and a line saying so."""
    bands = len(scene.bands)
    normalisation = recipe.normalisation
    if options.stretch:
        low, high = options.stretch
        origins["normalisation"] = OPTION
        sample = statistics()
        return percentile_stretch(sample.data, ~sample.nodata, low, high), (
            f"per-band percentile stretch {low:g}-{high:g} % over the whole scene [option]"
        )
    if normalisation is not None and normalisation.kind != "gain" and options.gain is None:
        origins["normalisation"] = MODEL
        sample = statistics()
        valid = ~sample.nodata
        if normalisation.kind == "stretch":
            radiometry = percentile_stretch(sample.data, valid, normalisation.low, normalisation.high)
        elif normalisation.kind == "standardize":
            radiometry = standardize(sample.data, valid, normalisation.mean, normalisation.std)
        else:
            radiometry = histogram_match(sample.data, valid, normalisation.percentiles, normalisation.reference)
        return radiometry, f"{normalisation.describe()}, as the model was trained [model]"
    if scene.dtype == "uint8":  # already rendered: the fixed gain does not apply
        return passthrough(bands), "uint8 data used as it is"
    gain, gain_from = _pick((OPTION, options.gain), (MODEL, recipe.gain), (DEFAULT, DEFAULTS.gain))
    floating = np.dtype(scene.dtype).kind == "f"
    if options.scale is not None:
        scale, scale_from = options.scale, OPTION
    elif floating:
        sample = statistics()
        scale, why = default_scale(sample.data, ~sample.nodata)
        scale_from = f"{RASTER}: {why}"
    else:
        scale, scale_from = _pick((MODEL, recipe.scale), (DEFAULT, DEFAULTS.scale))
    product_offset = source.offset if options.product_offset else None
    if floating and scale != (recipe.scale or DEFAULTS.scale) and options.offset is None:
        # Reflectance data: a DN offset (the product's or the model's) is in other units; float
        # exports from SNAP, openEO or Earth Engine have it applied already.
        offset, offset_from = 0.0, f"{DEFAULT}: reflectance data, DN offsets do not apply"
    else:
        offset, offset_from = _pick((OPTION, options.offset), (PRODUCT, product_offset), (MODEL, recipe.offset),
                                    (DEFAULT, DEFAULTS.offset))
    origins.update(gain=gain_from, offset=offset_from, scale=scale_from)
    line = (f"clip((value + offset) / scale * gain, 0, 1) * 255 with gain {gain:g} [{gain_from}], "
            f"offset {offset:g} [{offset_from}], scale {scale:g} [{scale_from}]")
    return reflectance_gain(bands, gain=float(gain), offset=float(offset), scale=float(scale)), line


def plan_scan(source: Source, options: ScanOptions, model: ModelFacts, *, output: str | None = None,
              count_nodata_tiles: bool = False) -> ScanPlan:
    """Resolve ``options`` against the model and the scene (see the module docstring); opens the scene briefly.

    ``count_nodata_tiles`` estimates how many tiles are entirely nodata from the
    scene's overview (for :meth:`ScanPlan.explain`; the scan itself skips them exactly).
    """
    meta = model.metadata
    origins: dict[str, str] = {}
    bands, origins["bands"] = _pick((PRODUCT, source.bands), (OPTION, options.bands), (MODEL, meta.recipe.bands))
    nodata, origins["nodata"] = _pick((OPTION, options.nodata), (PRODUCT, source.nodata))
    with source.open(bands=bands, nodata=nodata, bands_origin=origins["bands"] or None) as scene:
        if bands is None:
            origins["bands"] = RASTER
        if nodata is None:
            origins["nodata"] = RASTER
        mask = None
        if source.georeferenced:
            from minescan.quality.settings import load_mask

            mask, origins["mask"] = load_mask(options.mask, source.scl, options.mask_classes, scene)
        statistics = _Sample(scene, mask)
        radiometry, rendering = _radiometry(scene, options, source, meta.recipe, origins, statistics)
        if model.fixed_size is not None:
            if options.tile not in (None, model.fixed_size):
                raise TileGridError(f"tile {options.tile} px, but {model.name} takes fixed {model.fixed_size} px tiles")
            tile, origins["tile"] = model.fixed_size, MODEL
        else:
            tile, origins["tile"] = _pick((OPTION, options.tile), (DEFAULT, DEFAULTS.tile))
        if model.task == "classifier":  # windows every stride px: the overlap is what the stride leaves
            stride, stride_from = _pick((OPTION, options.stride), (f"{DEFAULT}: half the window", tile // 2 or 1))
            if tile % stride:
                raise OptionError("stride", stride, f"must divide the classifier's window of {tile} px")
            overlap, origins["overlap"] = tile - stride, f"window - stride [{stride_from}]"
        else:
            overlap, origins["overlap"] = _pick((OPTION, options.overlap), (DEFAULT, DEFAULTS.overlap))
            if overlap > tile // 2:  # the stitcher's rule: a neighbour reaches at most half a tile past an edge
                raise TileGridError(f"overlap {overlap} px must be between 0 and half the tile size ({tile // 2} px)")
        grid = TileGrid(scene.width, scene.height, tile, overlap)
        quality = None
        if mask is not None:
            from minescan.quality.settings import plan_quality

            skip_masked, origins["skip_masked"] = _pick((OPTION, options.skip_masked), (DEFAULT, DEFAULTS.skip_masked))
            max_masked, origins["max_masked"] = _pick((OPTION, options.max_masked), (DEFAULT, DEFAULTS.max_masked))
            action, origins["masked"] = _pick((OPTION, options.masked), (DEFAULT, DEFAULTS.masked))
            quality = plan_quality(mask, origins["mask"], grid, float(skip_masked), float(max_masked), action)
        shift = None
        if meta.input_statistics is not None:
            shift = input_shift(radiometry, meta.input_statistics, statistics())
        plan_values = dict(
            width=scene.width, height=scene.height, dtype=scene.dtype, crs=scene.crs, transform=scene.transform,
            bands=tuple(scene.bands), band_names=scene.band_descriptions, nodata=scene.nodata,
            nodata_tiles=_nodata_tiles(scene, grid) if count_nodata_tiles else None, quality=quality,
        )
    batch, origins["batch"] = _pick((OPTION, options.batch), (DEFAULT, DEFAULTS.batch))
    threshold, origins["score_threshold"] = _pick((OPTION, options.score_threshold), (DEFAULT, DEFAULTS.score_threshold))
    iou, origins["iou"] = _pick((OPTION, options.iou), (DEFAULT, DEFAULTS.iou))
    drop_parts, origins["drop_parts"] = _pick((OPTION, options.drop_parts), (MODEL, meta.postprocessing.drop_parts),
                                             (DEFAULT, DEFAULTS.drop_parts))
    read_threads, origins["read_threads"] = _pick((OPTION, options.read_threads),
                                                 (f"{DEFAULT}: two per core", DEFAULTS.read_threads()))
    labels, origins["labels"] = _pick((OPTION, options.labels), (MODEL, dict(meta.labels) or None))
    shift_threshold, origins["shift_threshold"] = _pick((OPTION, options.shift_threshold), (DEFAULT, DEFAULTS.shift_threshold))
    concessions = None
    if options.concessions is not None:
        from minescan.scan.assess import concession_source

        concessions = concession_source(options.concessions, options.concession_field)
    stitch = StitchSettings(iou_threshold=float(iou), containment=DEFAULTS.containment, edge_tolerance=DEFAULTS.edge_tolerance,
                            class_agnostic=options.class_agnostic, drop_parts=float(drop_parts))
    return ScanPlan(
        source=source, radiometry=radiometry, rendering=rendering, tile=tile, overlap=overlap, tiles=len(grid),
        grid_shape=grid.shape, batch=batch, score_threshold=float(threshold), stitch=stitch, read_threads=read_threads,
        model=model, labels=dict(labels or {}), origins=origins, output=output, input_shift=shift,
        shift_threshold=float(shift_threshold), concessions=concessions, **plan_values,
    )
