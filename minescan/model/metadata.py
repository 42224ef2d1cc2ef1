"""Metadata that minescan keeps inside an ONNX model file.

An exported model carries what a scan needs to run it without repeating flags:
the label map, the input size it was exported for, the preprocessing
recipe (which bands, which gain and offset make its uint8 RGB) and, when its
owner set one, the postprocessing recipe (``drop_parts``: see
:mod:`minescan.scan.parts`) and the statistics of the input it was trained or
calibrated on (:mod:`minescan.model.statistics`, the domain-shift guard), and what
the model is (``minescan.task``: ``"detector"`` or ``"classifier"``).  They live in
the ONNX ``metadata_props`` under the ``minescan.`` prefix, each value a JSON
document, so any ONNX tool shows them and ONNX Runtime returns them through
``InferenceSession.get_modelmeta().custom_metadata_map``.

:func:`parse_metadata` checks every entry it reads and raises
:class:`MetadataError` (a :class:`~minescan.model.contract.ContractError`)
with one line naming the key and the offending value, e.g.
``metadata 'minescan.preprocessing': 'gain' must be a number, got 'abc'``;
the backends prefix the model file.  :func:`check_input_size` refuses a
``minescan.input_size`` that contradicts the graph's fixed input height and
width.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from minescan.model.contract import ContractError, ModelSignature
from minescan.model.statistics import STATISTICS_KEY, InputStatistics, StatisticsError

LABELS_KEY = "minescan.labels"
INPUT_SIZE_KEY = "minescan.input_size"
PREPROCESSING_KEY = "minescan.preprocessing"
SOURCE_SHA256_KEY = "minescan.source_sha256"
TOOL_VERSIONS_KEY = "minescan.tool_versions"
BUILD_KEY = "minescan.build"
POSTPROCESSING_KEY = "minescan.postprocessing"
TASK_KEY = "minescan.task"
TASKS = ("detector", "classifier")


class MetadataError(ContractError, ValueError):
    """A ``minescan.*`` metadata entry is not what it should be (a one-line :class:`~minescan.errors.MinescanError`)."""


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


RECIPE_KEYS = ("bands", "gain", "offset", "scale", "normalisation")
NORMALISATIONS = ("gain", "stretch", "standardize", "histogram_match")


@dataclass(frozen=True)
class Normalisation:
    """How a model's uint8 input was normalised per scene in training (the ``normalisation`` of a recipe).

    - ``gain``: fixed ``clip((value + offset) / scale * gain, 0, 1) * 255`` (the recipe's numbers);
    - ``stretch``: each band's ``low`` and ``high`` percentile over the scene to 0 and 255;
    - ``standardize``: each band's scene mean and standard deviation to ``mean`` and ``std`` (uint8 levels);
    - ``histogram_match``: each band's scene ``percentiles`` to the ``reference`` uint8 values
      (one list per band, rising), piecewise linear between them.

    Scene statistics are measured once per scene (see
    :meth:`minescan.raster.scene.Scene.statistics_sample`), never per tile.
    """

    kind: str = "gain"
    low: float = 2.0
    high: float = 98.0
    mean: float = 110.0
    std: float = 40.0
    percentiles: tuple[float, ...] = ()
    reference: tuple[tuple[float, ...], ...] = ()

    @classmethod
    def from_json(cls, raw: Any) -> "Normalisation":
        where = f"metadata {PREPROCESSING_KEY!r}: 'normalisation'"
        if not isinstance(raw, dict) or raw.get("kind") not in NORMALISATIONS:
            raise MetadataError(f"{where} must be an object with 'kind' one of {', '.join(NORMALISATIONS)}, got {raw!r}")
        kind = raw["kind"]
        known = {"gain": {"kind"}, "stretch": {"kind", "low", "high"}, "standardize": {"kind", "mean", "std"},
                 "histogram_match": {"kind", "percentiles", "reference"}}[kind]
        unknown = sorted(set(raw) - known)
        if unknown:
            raise MetadataError(f"{where} of kind {kind!r} has unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
        for key in known - {"kind", "percentiles", "reference"}:
            if key in raw and not _is_number(raw[key]):
                raise MetadataError(f"{where}: {key!r} must be a number, got {raw[key]!r}")
        values = {k: float(raw[k]) for k in known - {"kind", "percentiles", "reference"} if k in raw}
        made = cls(kind=kind, **values)
        if kind == "stretch" and not 0 <= made.low < made.high <= 100:
            raise MetadataError(f"{where}: percentiles must satisfy 0 <= low < high <= 100, got {made.low:g}, {made.high:g}")
        if kind == "standardize" and not (0 <= made.mean <= 255 and made.std > 0):
            raise MetadataError(f"{where}: 'mean' must be in [0, 255] and 'std' positive, got {made.mean:g}, {made.std:g}")
        if kind == "histogram_match":
            pct, ref = raw.get("percentiles"), raw.get("reference")
            if not (isinstance(pct, list) and len(pct) >= 2 and all(_is_number(p) for p in pct)
                    and all(0 <= a < b <= 100 for a, b in zip(pct, pct[1:]))):
                raise MetadataError(f"{where}: 'percentiles' must be 2 or more rising numbers in [0, 100], got {pct!r}")
            if not (isinstance(ref, list) and ref and all(
                    isinstance(band, list) and len(band) == len(pct) and all(_is_number(v) and 0 <= v <= 255 for v in band)
                    and all(a <= b for a, b in zip(band, band[1:])) for band in ref)):
                raise MetadataError(f"{where}: 'reference' must hold, per band, {len(pct)} non-decreasing uint8 values, got {ref!r}"[:300])
            made = cls(kind=kind, percentiles=tuple(float(p) for p in pct),
                       reference=tuple(tuple(float(v) for v in band) for band in ref))
        return made

    def to_json(self) -> dict[str, Any]:
        if self.kind == "stretch":
            return {"kind": "stretch", "low": self.low, "high": self.high}
        if self.kind == "standardize":
            return {"kind": "standardize", "mean": self.mean, "std": self.std}
        if self.kind == "histogram_match":
            return {"kind": "histogram_match", "percentiles": list(self.percentiles), "reference": [list(b) for b in self.reference]}
        return {"kind": "gain"}

    def describe(self) -> str:
        """A short phrase for the scan plan."""
        return {
            "gain": "fixed gain",
            "stretch": f"per-band percentile stretch {self.low:g}-{self.high:g} % over the scene",
            "standardize": f"per-band standardisation to mean {self.mean:g}, std {self.std:g} over the scene",
            "histogram_match": f"per-band histogram match to the model's reference ({len(self.percentiles)} percentiles)",
        }[self.kind]


@dataclass(frozen=True)
class Recipe:
    """How the model's owner turned scene pixels into its uint8 RGB: None where the model does not say.

    ``bands`` are 1-based red, green, blue indexes; a pixel value ``v`` becomes
    reflectance ``(v + offset) / scale``, rendered ``clip(reflectance * gain, 0, 1) * 255``,
    unless ``normalisation`` says the model was trained on a per-scene normalisation.
    """

    bands: tuple[int, ...] | None = None
    gain: float | None = None
    offset: float | None = None
    scale: float | None = None
    normalisation: Normalisation | None = None  # None: not recorded (fixed gain)

    @classmethod
    def from_json(cls, raw: Any) -> "Recipe":
        """The recipe of a ``minescan.preprocessing`` JSON object; raise :class:`MetadataError` on nonsense."""
        if not isinstance(raw, dict):
            raise MetadataError(f"metadata {PREPROCESSING_KEY!r} must be an object, got {raw!r}")
        unknown = sorted(set(raw) - set(RECIPE_KEYS))
        if unknown:
            raise MetadataError(f"metadata {PREPROCESSING_KEY!r} has unknown key {unknown[0]!r} (known: {', '.join(RECIPE_KEYS)})")
        bands = raw.get("bands")
        if bands is not None and not (
            isinstance(bands, list) and len(bands) == 3 and all(isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in bands)
        ):
            raise MetadataError(f"metadata {PREPROCESSING_KEY!r}: 'bands' must be null or 3 1-based band numbers, got {bands!r}")
        numbers = {}
        for key in ("gain", "offset", "scale"):
            value = raw.get(key)
            if value is not None and not _is_number(value):
                raise MetadataError(f"metadata {PREPROCESSING_KEY!r}: {key!r} must be a number, got {value!r}")
            numbers[key] = None if value is None else float(value)
        for key in ("gain", "scale"):
            if numbers[key] is not None and numbers[key] <= 0:
                raise MetadataError(f"metadata {PREPROCESSING_KEY!r}: {key!r} must be positive, got {raw.get(key)!r}")
        normalisation = None if raw.get("normalisation") is None else Normalisation.from_json(raw["normalisation"])
        return cls(bands=tuple(bands) if bands else None, normalisation=normalisation, **numbers)

    def to_json(self) -> dict[str, Any]:
        """The JSON object written to the model (every key, null where unset)."""
        data = {key: getattr(self, key) for key in ("gain", "offset", "scale")}
        data["bands"] = list(self.bands) if self.bands else None
        data["normalisation"] = self.normalisation.to_json() if self.normalisation else None
        return data


@dataclass(frozen=True)
class Postprocessing:
    """Scan defaults the model's owner recorded: ``drop_parts`` (see :mod:`minescan.scan.parts`), None = not recorded."""

    drop_parts: float | None = None

    @classmethod
    def from_json(cls, raw: Any) -> "Postprocessing":
        if not isinstance(raw, dict):
            raise MetadataError(f"metadata {POSTPROCESSING_KEY!r} must be an object, got {raw!r}")
        unknown = sorted(set(raw) - {"drop_parts"})
        if unknown:
            raise MetadataError(f"metadata {POSTPROCESSING_KEY!r} has unknown key {unknown[0]!r} (known: drop_parts)")
        if "drop_parts" in raw and not (_is_number(raw["drop_parts"]) and 0 <= raw["drop_parts"] <= 1):
            raise MetadataError(f"metadata {POSTPROCESSING_KEY!r}: 'drop_parts' must be a number in [0, 1], got {raw['drop_parts']!r}")
        return cls(drop_parts=float(raw["drop_parts"]) if "drop_parts" in raw else None)

    def to_json(self) -> dict[str, float]:
        return {} if self.drop_parts is None else {"drop_parts": self.drop_parts}


@dataclass(frozen=True)
class ModelMetadata:
    """What minescan reads back from a model's metadata.

    ``labels`` maps 1-based class ids to names; ``input_size`` is (height,
    width) or None for any size; ``recipe`` how scenes become its RGB;
    ``build`` how the file was made (target, precision, input size,
    calibration); ``postprocessing`` the scan defaults the model's owner chose;
    ``task`` what the exporter made it (``detector`` or ``classifier``), None
    when the file does not say (the graph's outputs tell it then:
    :func:`minescan.model.contract.model_task`).
    """

    labels: Mapping[int, str] = field(default_factory=dict)
    input_size: tuple[int, int] | None = None
    recipe: Recipe = field(default_factory=Recipe)
    source_sha256: str | None = None
    tool_versions: Mapping[str, str] = field(default_factory=dict)
    build: Mapping[str, Any] = field(default_factory=dict)
    postprocessing: Postprocessing = field(default_factory=Postprocessing)
    input_statistics: InputStatistics | None = None  # the training or calibration input (domain-shift guard)
    task: str | None = None  # "detector" or "classifier"; None: not recorded


def _loads(key: str, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise MetadataError(f"metadata {key!r} is not JSON: {text[:80]!r}") from None


def _labels(raw: Any) -> dict[int, str]:
    if not isinstance(raw, dict):
        raise MetadataError(f"metadata {LABELS_KEY!r} must map class ids to names, got {raw!r}")
    labels = {}
    for key, name in raw.items():
        if not (key.isascii() and key.isdigit() and int(key) >= 1):
            raise MetadataError(f"metadata {LABELS_KEY!r}: class id {key!r} is not a positive integer")
        if not isinstance(name, str) or not name.strip():
            raise MetadataError(f"metadata {LABELS_KEY!r}: the name of class {key} must be a non-empty string, got {name!r}")
        labels[int(key)] = name
    return labels


def _object(key: str, raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise MetadataError(f"metadata {key!r} must be an object, got {raw!r}")
    return raw


def parse_metadata(props: Mapping[str, str]) -> ModelMetadata:
    """Read minescan's entries from a ``metadata_props``-like mapping."""
    labels = _labels(_loads(LABELS_KEY, props[LABELS_KEY])) if LABELS_KEY in props else {}
    input_size = None
    if INPUT_SIZE_KEY in props:
        raw = _loads(INPUT_SIZE_KEY, props[INPUT_SIZE_KEY])
        if raw is not None:
            if not (isinstance(raw, list) and len(raw) == 2 and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in raw)):
                raise MetadataError(f"metadata {INPUT_SIZE_KEY!r} must be null or [height, width] in pixels, got {raw!r}")
            input_size = (raw[0], raw[1])
    recipe = Recipe.from_json(_loads(PREPROCESSING_KEY, props[PREPROCESSING_KEY])) if PREPROCESSING_KEY in props else Recipe()
    tool_versions = _object(TOOL_VERSIONS_KEY, _loads(TOOL_VERSIONS_KEY, props[TOOL_VERSIONS_KEY])) if TOOL_VERSIONS_KEY in props else {}
    build = _object(BUILD_KEY, _loads(BUILD_KEY, props[BUILD_KEY])) if BUILD_KEY in props else {}
    postprocessing = (
        Postprocessing.from_json(_loads(POSTPROCESSING_KEY, props[POSTPROCESSING_KEY])) if POSTPROCESSING_KEY in props else Postprocessing()
    )
    task = _loads(TASK_KEY, props[TASK_KEY]) if TASK_KEY in props else None
    if task is not None and task not in TASKS:
        raise MetadataError(f"metadata {TASK_KEY!r} must be one of {', '.join(TASKS)} or null, got {task!r}")
    statistics = None
    if STATISTICS_KEY in props:
        try:
            statistics = InputStatistics.from_json(_loads(STATISTICS_KEY, props[STATISTICS_KEY]))
        except StatisticsError as exc:
            raise MetadataError(str(exc)) from None
    return ModelMetadata(
        input_statistics=statistics,
        labels=labels,
        input_size=input_size,
        recipe=recipe,
        source_sha256=props.get(SOURCE_SHA256_KEY),
        tool_versions=tool_versions,
        build=build,
        postprocessing=postprocessing,
        task=task,
    )


def check_input_size(meta: ModelMetadata, signature: ModelSignature, graph: str = "the graph's input") -> None:
    """Raise :class:`MetadataError` when ``minescan.input_size`` contradicts a fixed input height or width.

    A run-time (symbolic) dimension agrees with any size; ``graph`` names what
    was read (the ONNX graph's input, a TensorRT engine's input).
    """
    if meta.input_size is None:
        return
    fixed = (signature.height, signature.width)
    if any(dim is not None and dim != want for dim, want in zip(fixed, meta.input_size)):
        shown = "x".join("?" if dim is None else str(dim) for dim in fixed)
        raise MetadataError(f"metadata {INPUT_SIZE_KEY!r} {list(meta.input_size)} contradicts {graph} {shown}")


def metadata_props(meta: ModelMetadata) -> dict[str, str]:
    """The ``metadata_props`` entries that encode ``meta``."""
    props = {
        LABELS_KEY: json.dumps({str(k): v for k, v in sorted(meta.labels.items())}),
        INPUT_SIZE_KEY: json.dumps(list(meta.input_size) if meta.input_size else None),
        PREPROCESSING_KEY: json.dumps(meta.recipe.to_json(), sort_keys=True),
        TOOL_VERSIONS_KEY: json.dumps(dict(meta.tool_versions), sort_keys=True),
    }
    if meta.build:
        props[BUILD_KEY] = json.dumps(dict(meta.build), sort_keys=True)
    if meta.postprocessing.to_json():
        props[POSTPROCESSING_KEY] = json.dumps(meta.postprocessing.to_json(), sort_keys=True)
    if meta.source_sha256:
        props[SOURCE_SHA256_KEY] = meta.source_sha256
    if meta.task is not None:
        if meta.task not in TASKS:
            raise MetadataError(f"metadata {TASK_KEY!r} must be one of {', '.join(TASKS)} or null, got {meta.task!r}")
        props[TASK_KEY] = json.dumps(meta.task)
    if meta.input_statistics is not None:
        props[STATISTICS_KEY] = json.dumps(meta.input_statistics.to_json(), sort_keys=True)
    return props
