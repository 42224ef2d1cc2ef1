"""The Python API: load a model once, scan scenes and in-memory rasters with it.

::

    from minescan import Scanner
    scanner = Scanner("model.onnx", backend="auto")        # loads and checks the model once
    result = scanner.scan("S2B_MSIL2A_....SAFE", score_threshold=0.5)
    result.detections          # boxes in scene pixels, scores, class ids; result.labels names them
    result.to_geojson()        # RFC 7946 dict, WGS84
    result.write("out.gpkg")   # atomic, format by extension

A :class:`Scanner` is what the command line runs too: ``minescan scan`` for
one scene or a run, ``bench`` and ``demo`` all build a
:class:`~minescan.scan.plan.ScanPlan` with :meth:`Scanner.plan` and scan it
through the one stream (:func:`~minescan.scan.stream.run_stream`).

Thread safety: one Scanner may serve concurrent :meth:`~Scanner.scan` and
:meth:`~Scanner.detect` calls (a service shares one).  The model session is
the only shared state and ONNX Runtime sessions may be run from several
threads; each call builds its own plan, reader threads, queues and
stitcher, and temporary files get names of their own.
"""

from __future__ import annotations

import os
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from minescan.errors import MinescanError, SettingError
from minescan.model.detections import SceneDetections
from minescan.raster.grid import Tile
from minescan.raster.sources.resolve import absolute_input, resolve
from minescan.raster.sources.source import Source
from minescan.scan.pipeline import StageClock
from minescan.scan.assess import Assessment, assess, sensing_date, unobserved
from minescan.scan.plan import ModelFacts, ScanOptions, ScanPlan, plan_scan
from minescan.scan.stitch import Stitcher
from minescan.scan.stream import run_stream

Progress = Callable[[int, int], None]  # (tiles done, tiles in all)


class ApiError(MinescanError):
    """An API call that cannot be served as asked (an array of the wrong shape, a missing optional package)."""


@dataclass(frozen=True)
class SceneOutcome:
    """What every scan of a scene returns besides its result: the scene's name, labels, placement, counts and plan."""

    scene: str
    labels: Mapping[int, str]
    crs: Any
    transform: Any
    tiles: int
    skipped: int
    seconds: float
    plan: ScanPlan

    @property
    def tiles_per_second(self) -> float:
        return self.tiles / self.seconds if self.seconds > 0 else 0.0

    @property
    def input_shift(self) -> float | None:
        """How far the scene's rendered input lies from the model's training input (None: the model records none)."""
        return self.plan.input_shift

    @property
    def reliable(self) -> bool:
        """False when the domain-shift guard flags the scene: its result is not to be trusted."""
        return not self.plan.shifted

    def _flagged(self, what: str) -> str | None:
        if self.reliable:
            return None
        return (f"{self.scene}: input shift {self.input_shift:.2f} > threshold {self.plan.shift_threshold:g}: the scene's "
                f"rendered input is unlike the model's training input, so its {what} UNRELIABLE (not a clean result)")


@dataclass(frozen=True)
class ScanResult(SceneOutcome):
    """The objects found in one scene, each once, and what it took.

    ``detections`` are in scene pixels (pixel-corner ``x0, y0, x1, y1``), best
    score first; ``labels`` maps their class ids to names; ``crs`` and
    ``transform`` place them on the map.
    """

    detections: SceneDetections = field(default_factory=SceneDetections.empty)
    gated: int = 0  # tiles the classifier gate kept from the detector (plan.gate; not in ``skipped``)
    gated_tiles: tuple[Tile, ...] = ()  # which (grid order); the quicklook dims them
    # Each detection's masked share, flag, concession and share inside one; what the scan could not see
    # (minescan.scan.assess).
    assessment: Assessment = field(default_factory=Assessment)

    @property
    def date(self) -> str | None:
        """The scene's sensing date (``YYYY-MM-DD``) from its product id; None when the name carries none."""
        return sensing_date(self.plan.source.product_id if self.plan.source.kind != "raster" else self.scene)

    @property
    def masked_tiles(self) -> int:
        """Tiles the quality mask kept from the detector (at least ``skip_masked`` masked; not in ``skipped``)."""
        return self.assessment.masked_tiles

    @property
    def flagged(self) -> np.ndarray:
        """bool per detection: its box is more than ``max_masked`` under the quality mask (not to be trusted)."""
        return self.assessment.columns(len(self.detections))["flagged"].astype(bool)

    def unobserved(self) -> tuple[np.ndarray, np.ndarray]:
        """Polygons (scene CRS) of what the scan could not see and their reasons (:func:`~minescan.scan.assess.unobserved`).

        Outlined once per result (0.4 s for a full tile's clouds), however many formats it is written in (the
        service and the demo write two); a result made with ``dataclasses.replace`` outlines its own.
        """
        cached = self.__dict__.get("_unobserved")
        if cached is None:
            cached = unobserved(self)
            object.__setattr__(self, "_unobserved", cached)  # a cache beside the frozen fields, not a field
        return cached

    def quality_note(self) -> str:
        """``clear 82 %, 3 tiles masked (not scanned), 2 detections flagged`` ('' without a mask)."""
        quality = self.plan.quality
        if quality is None:
            return ""
        a = self.assessment
        told = f"{a.dropped} detection(s) dropped" if quality.action == "drop" else f"{int(self.flagged.sum())} detection(s) flagged"
        return (f"clear {a.clear_share:.0%}, {a.masked_tiles} tile(s) masked (not scanned), {told} "
                f"(over {quality.max_masked:.0%} masked)")

    def write_quicklook(self, path: str | os.PathLike[str], *, max_size: int | None = None) -> Path:
        """A PNG of the scene with the detections outlined and the tiles the gate kept from the detector dimmed
        (:func:`~minescan.results.quicklook.render`), at most ``max_size`` px a side (default the runs' quicklook size)."""
        from minescan.defaults import DEFAULTS
        from minescan.results.quicklook import write_quicklook

        from minescan.results.quicklook import Decorations

        if self.plan.source.kind == "array":
            raise ApiError("a quicklook draws the scene from its file; an in-memory array has none")
        quality = self.plan.quality
        decorations = Decorations(title=self.scene, date=self.date, model=self.plan.model.name, labels=self.labels,
                                  transform=self.transform, crs=self.crs, masked=quality.mask if quality else None,
                                  flagged=self.flagged if quality else None)
        return write_quicklook(path, self.plan.source.dataset, self.detections, bands=self.plan.bands, nodata=self.plan.nodata,
                               max_size=max_size or DEFAULTS.quicklook_size, gated=self.gated_tiles,
                               grid=self.plan.grid if self.gated_tiles else None, decorations=decorations)

    def warning(self) -> str | None:
        """One line for a flagged scene (None when it is not flagged)."""
        return self._flagged(f"{len(self.detections)} detection(s) are")

    def metadata(self, *, wgs84: bool = False) -> dict[str, Any]:
        """What the result file records about the scan besides the features: the guard's verdict, the sensing date,
        the scene's footprint (WKT, in the file's CRS: WGS84 for ``wgs84``), the quality mask's summary, the concessions."""
        quality = self.plan.quality
        a = self.assessment
        meta = {"scene": self.scene, "model": self.plan.model.name, "input_shift": self.input_shift,
                "shift_threshold": self.plan.shift_threshold, "reliable": self.reliable,
                "detections": len(self.detections), "date": self.date, "footprint": self._footprint(wgs84),
                "quality": {"mask": quality.mask.origin if quality else None,
                            "clear_share": None if a.clear_share is None else round(a.clear_share, 4),
                            "max_masked": quality.max_masked if quality else None,
                            "masked": quality.action if quality else None, "skipped_tiles": a.masked_tiles,
                            "dropped": a.dropped}}
        if self.plan.concessions is not None:
            meta["concessions"] = {"file": self.plan.concessions.path, "field": self.plan.concessions.field}
        return meta | ({"gate": self.gate_metadata()} if self.plan.gate else {})

    def _footprint(self, wgs84: bool) -> str | None:
        """The raster's extent as WKT, in the scene's CRS or WGS84 (None without a CRS)."""
        if self.crs is None or self.transform is None:
            return None
        import shapely

        from minescan.results.georef import box_polygons, to_wgs84

        polygon = box_polygons(np.array([[0, 0, self.plan.width, self.plan.height]], np.float64), self.transform)
        if wgs84:
            polygon = to_wgs84(shapely.segmentize(polygon, max(self.plan.width, self.plan.height) * abs(self.transform.a) / 16), self.crs)
        return shapely.to_wkt(polygon[0], rounding_precision=9 if wgs84 else 3)

    def gate_metadata(self) -> dict[str, Any]:
        """The gate's model, threshold and the tiles it gated off (empty without a gate)."""
        gate = self.plan.gate
        return {} if gate is None else {"model": gate.name, "threshold": gate.threshold, "window": gate.window,
                                        "stride": gate.stride, "gated": self.gated, "tiles": self.tiles}

    def gate_note(self) -> str:
        """``N tiles gated off by NAME at T`` ('' without a gate), for summaries."""
        gate = self.plan.gate
        return "" if gate is None else f"{self.gated} tiles gated off by {gate.name} at {gate.threshold:g}"

    @property
    def class_labels(self) -> list[str]:
        """Each detection's class name (its id as text when the model names none)."""
        return [self.labels.get(int(c), str(int(c))) for c in self.detections.classes]

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write the detections to ``path`` atomically; the format follows the extension (:mod:`minescan.results.writers`)."""
        from minescan.results.writers import result_writer, write_detections

        wgs84 = result_writer(path).wgs84
        observed = self.unobserved()
        return write_detections(path, self.detections, transform=self.transform, crs=self.crs, labels=self.labels,
                                scene=self.scene, metadata=self.metadata(wgs84=wgs84),
                                extra=self.assessment.columns(len(self.detections)),
                                unobserved=observed if len(observed[0]) or self.plan.quality is not None else None)

    def _polygons(self, wgs84: bool):
        from minescan.results.georef import box_polygons, to_wgs84

        if self.crs is None:
            raise ApiError(f"{self.scene}: the raster has no CRS, so its detections cannot be placed on a map")
        polygons = box_polygons(self.detections.boxes, self.transform)
        return to_wgs84(polygons, self.crs) if wgs84 else polygons

    def _properties(self) -> list[dict[str, Any]]:
        d = self.detections
        context = self.assessment.columns(len(d))

        def value(v: Any) -> Any:
            return None if v is None or (isinstance(v, float) and np.isnan(v)) else v

        return [
            {"class_id": int(c), "class_label": name, "score": float(s), "scene": self.scene,
             "col_min": float(b[0]), "row_min": float(b[1]), "col_max": float(b[2]), "row_max": float(b[3]),
             "masked": value(float(m)), "flagged": int(f), "concession": value(k), "inside": value(float(i))}
            for b, s, c, name, m, f, k, i in zip(d.boxes, d.scores, d.classes, self.class_labels, context["masked"],
                                                 context["flagged"], context["concession"], context["inside"])
        ]

    def to_geojson(self) -> dict[str, Any]:
        """An RFC 7946 FeatureCollection (WGS84 longitude/latitude, counter-clockwise polygons)."""
        import shapely

        # Nine decimals (0.1 mm), as the .geojson writer stores them.
        rings = [np.round(shapely.get_coordinates(p), 9).tolist() for p in self._polygons(wgs84=True)]
        features = [{"type": "Feature", "properties": p, "geometry": {"type": "Polygon", "coordinates": [ring]}}
                    for ring, p in zip(rings, self._properties())]
        return {"type": "FeatureCollection", "minescan": self.metadata(wgs84=True), "features": features}

    def to_geodataframe(self):
        """A GeoPandas GeoDataFrame in the scene's CRS (needs GeoPandas: ``pip install 'minescan[geopandas]'``)."""
        try:
            import geopandas
        except ImportError as exc:
            raise ApiError("to_geodataframe needs GeoPandas: pip install 'minescan[geopandas]' (or geopandas)") from exc
        return geopandas.GeoDataFrame(self._properties() or None, geometry=list(self._polygons(wgs84=False)),
                                      crs=self.crs.to_wkt())


@dataclass(frozen=True)
class HeatmapResult(SceneOutcome):
    """A tile classifier's scan: class probabilities per cell of ``stride`` scene px (NaN = nodata).

    ``probabilities`` [C, rows, cols]; cell (r, c) covers scene pixels from
    ``(c, r) * stride``; ``labels`` name the classes (1-based ids, band order).
    """

    probabilities: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0), np.float32))
    stride: int = 1

    def warning(self) -> str | None:
        """One line for a flagged scene (None when it is not flagged)."""
        return self._flagged("heatmap is")

    @property
    def band_labels(self) -> list[str]:
        return [self.labels.get(i + 1, str(i + 1)) for i in range(self.probabilities.shape[0])]

    @property
    def cell_transform(self) -> Any:
        """The affine transform of the cell grid (the scene's, scaled by the stride)."""
        from affine import Affine

        return None if self.transform is None else self.transform * Affine.scale(self.stride)

    @property
    def window(self) -> int:
        """The classifier's window in scene px (each window gave one probability per class)."""
        return self.plan.tile

    def class_id(self, label: str | None = None) -> int:
        """The 1-based class named ``label``; None: the first foreground class (:func:`~minescan.scan.heatmap.foreground_classes`)."""
        from minescan.scan.heatmap import foreground_classes

        if label is None:
            return foreground_classes(self.probabilities.shape[0])[0]
        if label not in self.band_labels:
            raise ApiError(f"class {label!r} is not in the heatmap; its classes are {', '.join(self.band_labels)}")
        return self.band_labels.index(label) + 1

    def probability(self, label: str | None = None) -> np.ndarray:
        """One class's probability per cell, float32 [rows, cols], NaN = nodata (default: the first foreground class)."""
        return self.probabilities[self.class_id(label) - 1]

    def to_xarray(self) -> Any:
        """An ``xarray.DataArray`` (band, y, x) of probabilities: cell-centre map coordinates, band = class labels,
        attributes ``crs`` (WKT), ``transform`` (GDAL order), ``stride``, ``window``, ``nodata`` NaN.  Needs
        xarray: ``pip install 'minescan[xarray]'``; rioxarray users can ``.rio.write_crs(da.attrs['crs'])``."""
        try:
            import xarray
        except ImportError as exc:
            raise ApiError("to_xarray needs xarray: pip install 'minescan[xarray]' (or xarray)") from exc
        _, rows, cols = self.probabilities.shape
        t = self.cell_transform
        if t is None:
            x, y, attrs = np.arange(cols) + 0.5, np.arange(rows) + 0.5, {}
        else:
            x = t.c + (np.arange(cols) + 0.5) * t.a
            y = t.f + (np.arange(rows) + 0.5) * t.e
            attrs = {"transform": tuple(t.to_gdal()), "crs": self.crs.to_wkt() if self.crs is not None else None}
        return xarray.DataArray(self.probabilities, dims=("band", "y", "x"),
                                coords={"band": self.band_labels, "y": y, "x": x}, name="probability",
                                attrs={**attrs, "stride": self.stride, "window": self.window, "nodata": float("nan"),
                                       "scene": self.scene, "reliable": self.reliable})

    def regions(self, threshold: float, classes: Sequence[int] | None = None) -> Any:
        """Connected areas at or above ``threshold`` per class, as polygons (:mod:`minescan.results.regions`);
        ``classes`` 1-based, default the foreground classes."""
        from minescan.results.regions import heatmap_regions

        if not 0 <= threshold <= 1:
            raise ApiError(f"threshold {threshold!r} is out of range: must be in [0, 1]")
        return heatmap_regions(self.probabilities, self.cell_transform, self.band_labels, threshold, classes)

    def write_regions(self, path: str | os.PathLike[str], threshold: float) -> Path:
        """The regions at or above ``threshold`` written to ``path`` (GeoPackage, GeoJSON... by extension)."""
        from minescan.results.regions import write_regions

        return write_regions(path, self.regions(threshold), self.crs, layer=Path(self.scene).stem or "regions",
                             metadata={"scene": self.scene, "threshold": threshold, "stride": self.stride})

    def write_quicklook(self, path: str | os.PathLike[str], *, max_size: int | None = None, threshold: float = 0.5,
                        label: str | None = None) -> Path:
        """A PNG of one class's probability over the scene (:func:`~minescan.results.quicklook.render_heatmap`),
        at most ``max_size`` px a side (default the runs' quicklook size); a region's edge at ``threshold``."""
        from minescan.defaults import DEFAULTS
        from minescan.results.quicklook import Decorations, write_heatmap_quicklook

        if self.plan.source.kind == "array":
            raise ApiError("a quicklook draws the scene from its file; an in-memory array has none")
        decorations = Decorations(title=self.scene, date=sensing_date(self.plan.source.product_id), model=self.plan.model.name,
                                  transform=self.transform, crs=self.crs)
        return write_heatmap_quicklook(path, self.plan.source.dataset, self.probability(label), self.stride,
                                       bands=self.plan.bands, nodata=self.plan.nodata,
                                       max_size=max_size or DEFAULTS.quicklook_size, threshold=threshold,
                                       decorations=decorations, class_name=self.band_labels[self.class_id(label) - 1])

    def write(self, path: str | os.PathLike[str], *, as_float: bool = False) -> Path:
        """A Cloud Optimized GeoTIFF, one band per class (:mod:`minescan.results.heatmap`), written atomically;
        its tags record the scene, model, window, stride and the domain-shift guard's verdict."""
        from minescan.results.heatmap import write_heatmap

        tags = {"scene": self.scene, "model": self.plan.model.name, "window": self.window, "stride": self.stride,
                "reliable": self.reliable, "input_shift": self.input_shift}
        return write_heatmap(path, self.probabilities, transform=self.transform, crs=self.crs, stride=self.stride,
                             labels=self.band_labels, as_float=as_float, tags=tags)


class Scanner:
    """A model loaded and checked once, ready to scan scenes (see the module docstring).

    ``model`` is a model file (ONNX in the detector contract, or a TensorRT
    engine) or an already loaded :class:`~minescan.engine.Detector`.
    ``backend``, ``threads`` and ``workers`` choose where and how it runs
    (:func:`~minescan.engine.load_detector`).  ``gate``, a tile classifier
    (a file or a loaded one, run on the same backend), screens every
    detector tile (:mod:`minescan.scan.gate`; threshold: the
    ``gate_threshold`` option).  ``max_memory`` (bytes, or a size such as
    ``"2G"``) bounds the calls in flight on the CPU
    (:mod:`minescan.engine.memory_budget`; default: a share of the
    machine's RAM); a budget that cannot hold one call of the model raises
    :class:`~minescan.engine.memory_budget.MemoryBudgetError` at load.  Keyword ``defaults`` are
    :class:`~minescan.scan.plan.ScanOptions` fields applied to every call
    unless the call gives its own.
    """

    def __init__(self, model: Any, backend: str = "auto", *, threads: int | None = None, workers: int | None = None,
                 gate: Any = None, max_memory: int | str | None = None, render: Any = "cpu", **defaults: Any) -> None:
        from minescan.engine.memory_budget import MemoryBudget

        self.defaults = ScanOptions(**_options(defaults))  # bad values fail before the model loads
        self.memory_budget = MemoryBudget.of(max_memory)
        # How the model was asked to load: a Ray run's workers load it the same way (minescan.scaleout).
        self.loading = {"backend": backend, "threads": threads, "workers": workers,
                        "max_memory": self.memory_budget.bytes if max_memory is not None else None}
        if isinstance(model, (str, os.PathLike)):
            from minescan.engine import load_detector

            self.model_path: Path | None = Path(model)
            self.detector = load_detector(model, backend=backend, threads=threads, workers=workers)
        else:
            self.model_path = getattr(model, "path", None)
            self.detector = model
        if max_memory is not None and hasattr(self.detector, "limit_memory"):
            self.detector.limit_memory(self.memory_budget.bytes)
        self.model = ModelFacts.of(self.detector, self.model_path.name if self.model_path else "model")
        self.gate, self.gate_name, self.gate_path = None, None, None
        if gate is not None:
            from minescan.scan.gate import check_gate

            if isinstance(gate, (str, os.PathLike)):
                from minescan.engine import load_detector

                self.gate_name, self.gate_path = Path(gate).name, Path(gate)
                self.gate = load_detector(gate, backend=backend, threads=threads, workers=workers)
            else:
                self.gate_path = getattr(gate, "path", None)
                self.gate_name = Path(self.gate_path).name if self.gate_path else "gate"
                self.gate = gate
            check_gate(self.gate, self.gate_name, self.model.task)
        self.render = render
        self._render_stage = self._render_stage_factory(render)

    def _render_stage_factory(self, render: Any):
        """``render``: ``cpu`` (the reader threads render, the default), ``gpu`` (CUDA kernels; the CUDA
        backend), or a callable ``(radiometry, dtype, bands) -> stage`` (e.g. ``HostRender``, the
        device path on the CPU).  None for ``cpu``."""
        if render == "cpu":
            return None
        if render != "gpu" and not callable(render):
            raise SettingError("render", render, "choose cpu or gpu")
        if self.model.task != "detector" or not hasattr(self.detector, "detect_device"):
            raise SettingError("render", render, "renders for ONNX Runtime detectors only (tile classifiers and TensorRT "
                                                 "engines take host batches)")
        if self.gate is not None:
            raise SettingError("render", render, "cannot feed a classifier gate, which scores host batches")
        if render == "gpu":
            from minescan.raster.gpu_render import GpuRender, cuda_devices

            if self.detector.backend != "onnxruntime-cuda":
                raise SettingError("render", render, f"needs the CUDA backend (this model runs on {self.detector.backend})")
            if cuda_devices() == 0:
                raise SettingError("render", render, "needs minescan's CUDA kernels and a GPU they can see (none here)")
            return GpuRender
        return render

    @property
    def backend(self) -> str:
        return self.detector.backend

    @property
    def notice(self) -> str | None:
        """Why ``auto`` settled for the CPU when a GPU package is installed but unusable; None otherwise."""
        return self.detector.notice

    def options(self, **options: Any) -> ScanOptions:
        """This scanner's defaults with ``options`` (ScanOptions fields; None = not given) on top, checked."""
        return self.defaults.merged(**_options(options))

    def plan(self, source: str | os.PathLike[str] | Source, *, sources_dir: str | os.PathLike[str] | None = None,
             output: str | None = None, count_nodata_tiles: bool = False, **options: Any) -> ScanPlan:
        """Resolve ``source`` (any input minescan reads) and the options into a plan, without scanning.

        Inputs that need a VRT (a .SAFE, a STAC item, band files) get it in
        ``sources_dir``; without one, in a temporary folder that lives as long
        as the process.
        """
        source = self._source(source, sources_dir)
        return self._plan(source, self.options(**options), output=output, count_nodata_tiles=count_nodata_tiles)

    def _plan(self, source: Source, options: ScanOptions, **kwargs: Any) -> ScanPlan:
        """The plan, with the gate's when this scanner has one (its rendering checked against the detector's)."""
        plan = plan_scan(source, options, self.model, **kwargs)
        if self.gate is None:
            if options.gate_threshold is not None:
                raise ApiError(f"gate_threshold {options.gate_threshold:g} given, but the scanner has no gate")
            return plan
        from dataclasses import replace

        from minescan.defaults import DEFAULTS
        from minescan.scan.gate import check_rendering, plan_gate

        gate_model = ModelFacts.of(self.gate, self.gate_name or "gate")
        if self.gate.metadata.recipe != self.detector.metadata.recipe:  # else one rendering serves both
            gate_plan = plan_scan(source, replace(options, tile=None, overlap=None, stride=None), gate_model)
            check_rendering(gate_model.name, (plan.bands, plan.radiometry), (gate_plan.bands, gate_plan.radiometry),
                            (_normalisation(self.detector.metadata.recipe), _normalisation(self.gate.metadata.recipe)))
        threshold, origin = ((options.gate_threshold, "option") if options.gate_threshold is not None
                             else (DEFAULTS.gate_threshold, "default"))
        return replace(plan, gate=plan_gate(self.gate, gate_model.name, plan.tile, threshold, origin))

    def scan(self, source: str | os.PathLike[str] | Source | ScanPlan, *, progress: Progress | None = None,
             cancel: threading.Event | None = None, clock: StageClock | None = None,
             sources_dir: str | os.PathLike[str] | None = None, **options: Any) -> ScanResult:
        """Scan one scene: a raster, a .SAFE product (folder, MTD xml, zip or subdataset), a STAC item, band files.

        ``progress(done, total)`` is called as tiles finish; setting ``cancel``
        stops the scan within a batch (:class:`~minescan.scan.stream.ScanCancelled`).
        """
        if isinstance(source, ScanPlan):
            if options:
                raise ApiError(f"scan of a ready plan takes no options (got {', '.join(sorted(options))}): plan again")
            plan = source
        else:
            plan = self.plan(source, sources_dir=sources_dir, **options)
        return self._run(plan, progress, cancel, clock)

    def scan_many(self, sources: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str], *, ray: Any = None,
                  result_format: str | None = None, quicklook_size: int | None = None,
                  baseline: str | os.PathLike[str] | None = None, **options: Any) -> Any:
        """Scan many scenes into the run folder ``out_dir``, resumably, as ``minescan scan --out-dir`` does.

        Each scene's result ``<product_id>.<result_format>`` (a classifier's: a
        ``.tif`` heatmap) and quicklook land there, a journal records what is
        done (a second call with the same scenes and settings scans only what
        is not), and the run's summary is returned (a
        :class:`~minescan.runs.report.RunSummary`, also written as
        ``run_summary.json``/``.md``) and its report (``report.md``/``.html``,
        :mod:`minescan.report.morning`; with ``baseline``, an earlier run's
        folder, what changed since: ``changes.gpkg`` and chips).  A scene that fails is reported with its
        reason and the others go on.  ``ray`` scans the scenes on Ray actors
        (:mod:`minescan.scaleout.ray_run`): ``True`` on a local Ray instance
        started for the run, an address (``"auto"``, ``"ray://host:10001"``)
        on that cluster, or a :class:`~minescan.scaleout.ray_run.RaySettings`.
        Ctrl-C stops the run after writing its summary and raises KeyboardInterrupt.
        """
        from minescan.defaults import DEFAULTS
        from minescan.raster.sources.resolve import absolute_input
        from minescan.runs.batch import RunSettings, execute

        cluster = None
        if ray is not None and ray is not False:
            from minescan.scaleout.ray_run import RaySettings

            cluster = ray if isinstance(ray, RaySettings) else RaySettings(address=None if ray is True else str(ray))
        keys = list(dict.fromkeys(absolute_input(os.fspath(s), Path.cwd()) for s in sources))
        if baseline is not None:
            from minescan.report.baseline import read_baseline

            read_baseline(baseline)  # fails before any scanning
        settings = RunSettings(Path(out_dir), result_format or DEFAULTS.result_format,
                               DEFAULTS.quicklook_size if quicklook_size is None else quicklook_size, ray=cluster,
                               baseline=Path(baseline) if baseline is not None else None)
        summary = execute(keys, self, self.options(**options), settings)
        if summary.interrupted:
            raise KeyboardInterrupt
        return summary

    def detect(self, array: np.ndarray, *, transform: Any = None, crs: Any = None, nodata: float | None = None,
               name: str = "array", progress: Progress | None = None, cancel: threading.Event | None = None,
               **options: Any) -> ScanResult:
        """Scan an in-memory raster ``array`` [H, W, C] (C bands; [H, W] for one band) with the same plan as a file.

        ``transform`` (an affine.Affine) and ``crs`` place it on the map; without
        them the detections stay in pixels and cannot be written or projected.
        """
        from minescan.raster.memory import array_source

        with array_source(array, transform=transform, crs=crs, nodata=nodata, name=name) as source:
            plan = self._plan(source, self.options(**options))
            return self._run(plan, progress, cancel, None)

    def _source(self, source: str | os.PathLike[str] | Source, sources_dir: str | os.PathLike[str] | None) -> Source:
        if isinstance(source, Source):
            return source
        folder = Path(sources_dir) if sources_dir else _scratch()
        return resolve(absolute_input(os.fspath(source), Path.cwd()), folder)

    def scan_part(self, plan: ScanPlan, rows: Any, *, progress: Progress | None = None,
                  cancel: threading.Event | None = None) -> Any:
        """Scan tile rows ``rows`` (a :class:`~minescan.scan.split.RowSpan`) of a detector's plan, unstitched: a
        :class:`~minescan.scan.split.PartResult` for :func:`~minescan.scan.split.stitch_parts` (a split scene)."""
        from minescan.scan.split import scan_part

        return scan_part(plan, self.detector, rows, gate=self._gate(plan), tick=_ticker(progress, len(rows) * plan.grid_shape[1]),
                         cancel=cancel)

    def _gate(self, plan: ScanPlan) -> Any:
        """A fresh gate for one scan of ``plan`` (it counts what it gates), or None without one."""
        if plan.gate is None:
            return None
        from minescan.scan.gate import Gate

        if self.gate is None:
            raise ApiError(f"the plan has the gate {plan.gate.name}, but this scanner has no gate loaded")
        return Gate(self.gate, plan.gate)

    def _run(self, plan: ScanPlan, progress: Progress | None, cancel: threading.Event | None,
             clock: StageClock | None) -> ScanResult:
        tick = _ticker(progress, plan.tiles)

        if plan.model.task == "classifier":
            from minescan.scan.heatmap import HeatmapConsumer, HeatmapLayout

            layout = HeatmapLayout(plan.width, plan.height, plan.tile, plan.tile - plan.overlap)
            classes = self.detector.signature.classes or len(plan.labels) or 1
            stats = run_stream(plan, self.detector, HeatmapConsumer(layout, classes), clock=clock, tick=tick, cancel=cancel)
            return HeatmapResult(
                scene=plan.scene_name,
                probabilities=stats.result, stride=layout.stride, labels=plan.labels, crs=plan.crs, transform=plan.transform,
                tiles=stats.tiles, skipped=stats.skipped, seconds=stats.seconds, plan=plan,
            )
        stats = run_stream(plan, self.detector, Stitcher(plan.stitch), clock=clock, tick=tick, cancel=cancel,
                           gate=self._gate(plan), render=self._render_stage)
        return assess(ScanResult(
            scene=plan.scene_name,
            detections=stats.result, labels=plan.labels, crs=plan.crs, transform=plan.transform, tiles=stats.tiles,
            skipped=stats.skipped, seconds=stats.seconds, plan=plan, gated=stats.gated, gated_tiles=stats.gated_tiles,
        ), stats.masked, stats.coverage)


def _ticker(progress: Progress | None, total: int) -> Callable[[int], None]:
    """The stream's ``tick`` (tiles just finished) turned into ``progress(done, total)`` calls."""
    done = 0

    def tick(count: int) -> None:
        nonlocal done
        done += count
        if progress is not None and count:
            progress(done, total)

    return tick


def _normalisation(recipe: Any) -> str:
    """A recipe's normalisation in words, for messages: "stretch 2-98", "a fixed gain of 2.5"."""
    norm = getattr(recipe, "normalisation", None)
    if norm is None or norm.kind == "gain":
        gain = getattr(recipe, "gain", None)
        return f"a fixed gain of {gain:g}" if gain is not None else "a fixed gain"
    if norm.kind == "stretch":
        return f"stretch {getattr(norm, 'low', '?'):g}-{getattr(norm, 'high', '?'):g}"
    return norm.kind


def _options(options: Mapping[str, Any]) -> dict[str, Any]:
    """ScanOptions fields from keyword arguments; an unknown keyword is an error naming the known ones."""
    from minescan.scan.plan import OPTION_NAMES

    unknown = sorted(set(options) - set(OPTION_NAMES))
    if unknown:
        raise ApiError(f"unknown scan option {unknown[0]!r}; known: {', '.join(OPTION_NAMES)}")
    return {k: v for k, v in options.items() if v is not None}


_SCRATCH: tempfile.TemporaryDirectory | None = None
_SCRATCH_LOCK = threading.Lock()


def _scratch() -> Path:
    """A per-process folder for the VRTs of inputs scanned without a run folder (removed at exit)."""
    global _SCRATCH
    with _SCRATCH_LOCK:
        if _SCRATCH is None:
            _SCRATCH = tempfile.TemporaryDirectory(prefix="minescan-sources-")
        folder = Path(_SCRATCH.name) / uuid.uuid4().hex[:8]
    folder.mkdir()
    return folder
