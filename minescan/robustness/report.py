"""``minescan evaluate --robustness``: a model scored on labelled scenes under standard perturbations.

For each perturbation of :data:`~minescan.robustness.perturbations.STANDARD`
(or a chosen subset) every labelled scene is copied with the perturbation
applied (:func:`write_perturbed`: a tiled GeoTIFF beside the others in a
scratch folder, written strip by strip with the perturbation's halo, same
CRS, transform, data type and nodata), scanned by the same
:class:`~minescan.scan.scanner.Scanner` as any scene (so the model's
normalisation and the domain-shift guard act as in production), and scored
against the scene's truth; detections of all scenes are pooled per
perturbation.  The copy is deleted once scanned.

The perturbations act on reflectance ``(value + offset) / scale``: integer
scenes use the model's recipe scale (else 10000) and the offset the product
or the recipe declares; float scenes holding reflectance 0-1 use scale 1
(:func:`minescan.raster.radiometry.default_scale`).
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import rasterio
from rasterio.windows import Window

from minescan.defaults import DEFAULTS
from minescan.errors import MinescanError
from minescan.raster.radiometry import default_scale
from minescan.results.evaluation import Evaluation, evaluate
from minescan.robustness.perturbations import STANDARD, Perturbation, perturb_values

STRIP_ROWS = 512  # rows perturbed at a time (a multiple of 8, so JPEG-like blocks stay aligned)


class RobustnessError(MinescanError):
    """Robustness settings or inputs that cannot be used."""


@dataclass(frozen=True)
class Row:
    """One perturbation's pooled score: its name, the perturbation, the evaluation, each scene's input shift."""

    name: str
    perturbation: Perturbation
    evaluation: Evaluation
    input_shifts: tuple[float | None, ...]
    flagged: int  # scenes the guard flagged

    @property
    def input_shift(self) -> float | None:
        known = [s for s in self.input_shifts if s is not None]
        return max(known) if known else None


def choose(names: Iterable[str] | None) -> tuple[tuple[str, Perturbation], ...]:
    """The standard perturbations whose names are in ``names`` (all when None); ``clear`` always comes first."""
    if names is None:
        return STANDARD
    wanted = {n.strip() for n in names if n.strip()}
    known = {name for name, _ in STANDARD}
    unknown = sorted(wanted - known)
    if unknown:
        raise RobustnessError(f"unknown perturbation {unknown[0]!r}; known: {', '.join(dict.fromkeys(n for n, _ in STANDARD))}")
    return tuple((name, p) for name, p in STANDARD if name in wanted or name == "clear")


def _reflectance_units(path: str, recipe: Any, offset: float | None) -> tuple[float, float]:
    """(scale, offset) turning ``path``'s values into reflectance (see the module docstring)."""
    with rasterio.open(path) as src:
        if np.dtype(src.dtypes[0]).kind == "f":
            factor = max(1, -(-max(src.width, src.height) // 512))
            sample = src.read(out_shape=(src.count, max(1, src.height // factor), max(1, src.width // factor)))
            valid = np.isfinite(sample).all(axis=0)
            if src.nodata is not None and not math.isnan(src.nodata):
                valid &= ~(sample == src.nodata).all(axis=0)
            scale, _ = default_scale(sample, valid)
            return scale, 0.0 if scale == 1.0 else float(offset or 0.0)
    scale = recipe.scale if recipe.scale is not None else DEFAULTS.scale
    chosen = offset if offset is not None else recipe.offset if recipe.offset is not None else DEFAULTS.offset
    return float(scale), float(chosen)


def write_perturbed(source: str | os.PathLike[str], out: str | os.PathLike[str], perturbation: Perturbation, *,
                    scale: float, offset: float = 0.0, seed: int = 0) -> Path:
    """``source`` with ``perturbation`` applied, as a tiled GeoTIFF at ``out`` (see the module docstring)."""
    halo = -(-perturbation.halo // 8) * 8
    with rasterio.open(source) as src:
        profile = dict(driver="GTiff", width=src.width, height=src.height, count=src.count, dtype=src.dtypes[0],
                       nodata=src.nodata, crs=src.crs, transform=src.transform, tiled=True, blockxsize=256,
                       blockysize=256, compress="deflate", BIGTIFF="IF_SAFER")
        nodata = src.nodata
        with rasterio.open(out, "w", **profile) as dst:
            dst.descriptions = src.descriptions
            for top in range(0, src.height, STRIP_ROWS):
                rows = min(STRIP_ROWS, src.height - top)
                start, stop = max(0, top - halo), min(src.height, top + rows + halo)
                data = src.read(window=Window(0, start, src.width, stop - start))
                invalid = np.zeros(data.shape[1:], bool)
                if data.dtype.kind == "f":
                    invalid |= np.isnan(data).any(axis=0)
                if nodata is not None and not math.isnan(nodata):
                    invalid |= (data == nodata).all(axis=0)
                changed = perturb_values(data, invalid, perturbation, scale=scale, offset=offset, nodata=nodata,
                                         top=start, seed=seed)
                dst.write(changed[:, top - start : top - start + rows], window=Window(0, top, src.width, rows))
    return Path(out)


def _pixels_to_map(boxes: np.ndarray, transform: Any) -> np.ndarray:
    """Pixel boxes (x0, y0, x1, y1) to map bounds (xmin, ymin, xmax, ymax) of a north-up ``transform``."""
    xs = transform.c + boxes[:, [0, 2]] * transform.a
    ys = transform.f + boxes[:, [1, 3]] * transform.e
    return np.column_stack([xs.min(axis=1), ys.min(axis=1), xs.max(axis=1), ys.max(axis=1)])


def robustness(scanner: Any, scenes: Sequence[tuple[str, str]], *, perturbations: Sequence[tuple[str, Perturbation]] = STANDARD,
               options: Mapping[str, Any] | None = None, iou: float = DEFAULTS.match_iou,
               score_threshold: float = DEFAULTS.score_threshold, work_dir: str | None = None,
               report: Callable[[Row], None] | None = None) -> list[Row]:
    """Score ``scanner``'s model on (scene, truth) pairs under each perturbation; ``report`` sees each row as it is done.

    Detections are scanned at the scan's own threshold settings from
    ``options`` (a low ``score_threshold`` there gives AP its whole curve);
    precision and recall count those scoring at least ``score_threshold``.
    """
    from minescan.results.read import read_result_file

    options = dict(options or {})
    truths = []
    for scene, truth_path in scenes:
        truth = read_result_file(truth_path, scores=False)
        with rasterio.open(scene) as src:
            if src.crs is None:
                raise RobustnessError(f"{scene}: the raster has no CRS, so its truth cannot be placed on it")
            crs, transform = src.crs, src.transform
        truths.append((truth.boxes(crs), truth.class_ids, transform, truth.labels))
    recipe = scanner.detector.metadata.recipe
    units = [_reflectance_units(scene, recipe, options.get("offset")) for scene, _ in scenes]
    rows = []
    with tempfile.TemporaryDirectory(prefix="minescan-robustness-", dir=work_dir) as scratch:
        for name, perturbation in perturbations:
            boxes, scores, classes, truth_boxes, truth_classes, shifts, labels = [], [], [], [], [], [], {}
            for index, ((scene, _), (t_boxes, t_classes, transform, t_labels), (scale, offset)) in enumerate(
                    zip(scenes, truths, units)):
                path = scene if perturbation.kind == "none" else write_perturbed(
                    scene, Path(scratch) / f"{index}-{Path(scene).stem}.tif", perturbation, scale=scale, offset=offset,
                    seed=index)
                try:
                    result = scanner.scan(str(path), **options)
                finally:
                    if path != scene:
                        Path(path).unlink(missing_ok=True)
                shift = 1e9 * index  # scenes side by side on the map, far apart: no box matches across scenes
                d = result.detections
                boxes.append(_pixels_to_map(d.boxes.reshape(-1, 4), transform) + [shift, 0, shift, 0])
                scores.append(d.scores)
                classes.append(d.classes)
                truth_boxes.append(t_boxes + [shift, 0, shift, 0])
                truth_classes.append(t_classes)
                shifts.append(result.input_shift)
                labels.update(t_labels)
                labels.update(result.labels)
            evaluation = evaluate(np.concatenate(boxes), np.concatenate(scores), np.concatenate(classes),
                                  np.concatenate(truth_boxes), np.concatenate(truth_classes), iou=iou,
                                  score_threshold=score_threshold, labels=labels)
            threshold = options.get("shift_threshold") or DEFAULTS.shift_threshold
            row = Row(name, perturbation, evaluation, tuple(shifts), sum(s is not None and s > threshold for s in shifts))
            rows.append(row)
            if report:
                report(row)
    return rows


def header(rows_or_labels: Sequence[str]) -> str:
    """The Markdown table head for classes named ``rows_or_labels``."""
    classes = " | ".join(f"{label} P / R / AP" for label in rows_or_labels)
    return (f"| perturbation | strength | {classes} | mAP | input shift | flagged |\n"
            f"|---|---|{'---|' * len(rows_or_labels)}---|---|---|")


def format_row(row: Row, labels: Sequence[str], scenes: int) -> str:
    """One Markdown table row: precision '-' for a class with no detection (nothing to be precise about)."""
    by_label = {c.label: c for c in row.evaluation.classes}
    cells = []
    for label in labels:
        c = by_label.get(label)
        if c is None:
            cells.append("- / - / -")
            continue
        precision = f"{c.precision:.3f}" if c.detections else "-"
        ap = "-" if np.isnan(c.average_precision) else f"{c.average_precision:.3f}"
        cells.append(f"{precision} / {c.recall:.3f} / {ap}")
    shift = "-" if row.input_shift is None else f"{row.input_shift:.2f}"
    mean_ap = row.evaluation.mean_average_precision
    return (f"| {row.name} | {row.perturbation.label} | {' | '.join(cells)} | {mean_ap:.3f} | {shift} | "
            f"{row.flagged}/{scenes} |")
