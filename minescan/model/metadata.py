"""Metadata that minescan keeps inside an ONNX model file.

An exported model carries what a scan needs to run it without repeating flags:
the label map, the input size it was exported for, the preprocessing
recipe (which bands, which gain and offset make its uint8 RGB) and, when its
owner set one, the postprocessing recipe (``drop_parts``: see
:mod:`minescan.scan.parts`).  They live in
the ONNX ``metadata_props`` under the ``minescan.`` prefix, each value a JSON
document, so any ONNX tool shows them and ONNX Runtime returns them through
``InferenceSession.get_modelmeta().custom_metadata_map``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

LABELS_KEY = "minescan.labels"
INPUT_SIZE_KEY = "minescan.input_size"
PREPROCESSING_KEY = "minescan.preprocessing"
SOURCE_SHA256_KEY = "minescan.source_sha256"
TOOL_VERSIONS_KEY = "minescan.tool_versions"
BUILD_KEY = "minescan.build"
POSTPROCESSING_KEY = "minescan.postprocessing"


class MetadataError(ValueError):
    """A ``minescan.*`` metadata entry is not what it should be."""


RECIPE_KEYS = ("bands", "gain", "offset", "scale")


@dataclass(frozen=True)
class Recipe:
    """How the model's owner turned scene pixels into its uint8 RGB: None where the model does not say.

    ``bands`` are 1-based red, green, blue indexes; a pixel value ``v`` becomes
    reflectance ``(v + offset) / scale``, rendered ``clip(reflectance * gain, 0, 1) * 255``.
    """

    bands: tuple[int, ...] | None = None
    gain: float | None = None
    offset: float | None = None
    scale: float | None = None

    @classmethod
    def from_json(cls, raw: Any) -> "Recipe":
        """The recipe of a ``minescan.preprocessing`` JSON object; raise :class:`MetadataError` on nonsense."""
        if not isinstance(raw, dict):
            raise MetadataError(f"model metadata {PREPROCESSING_KEY!r} must be an object, got {raw!r}")
        bands = raw.get("bands")
        if bands is not None and not (
            isinstance(bands, list) and len(bands) == 3 and all(isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in bands)
        ):
            raise MetadataError(f"model metadata {PREPROCESSING_KEY!r}: 'bands' must be null or 3 1-based band numbers, got {bands!r}")
        numbers = {}
        for key in ("gain", "offset", "scale"):
            value = raw.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise MetadataError(f"model metadata {PREPROCESSING_KEY!r}: {key!r} must be a number, got {value!r}")
            numbers[key] = None if value is None else float(value)
        for key in ("gain", "scale"):
            if numbers[key] is not None and numbers[key] <= 0:
                raise MetadataError(f"model metadata {PREPROCESSING_KEY!r}: {key!r} must be positive, got {raw.get(key)!r}")
        return cls(bands=tuple(bands) if bands else None, **numbers)

    def to_json(self) -> dict[str, Any]:
        """The JSON object written to the model (every key, null where unset)."""
        data = asdict(self)
        data["bands"] = list(self.bands) if self.bands else None
        return data


@dataclass(frozen=True)
class Postprocessing:
    """Scan defaults the model's owner recorded: ``drop_parts`` (see :mod:`minescan.scan.parts`), None = not recorded."""

    drop_parts: float | None = None

    @classmethod
    def from_json(cls, raw: Any) -> "Postprocessing":
        if not isinstance(raw, dict) or set(raw) - {"drop_parts"} or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1 for v in raw.values()
        ):
            raise MetadataError(f"model metadata {POSTPROCESSING_KEY!r} must map drop_parts to a number in [0, 1], got {raw!r}")
        return cls(drop_parts=float(raw["drop_parts"]) if "drop_parts" in raw else None)

    def to_json(self) -> dict[str, float]:
        return {} if self.drop_parts is None else {"drop_parts": self.drop_parts}


@dataclass(frozen=True)
class ModelMetadata:
    """What minescan reads back from a model's metadata.

    ``labels`` maps 1-based class ids to names; ``input_size`` is (height,
    width) or None for any size; ``recipe`` how scenes become its RGB;
    ``build`` how the file was made (target, precision, input size,
    calibration); ``postprocessing`` the scan defaults the model's owner chose.
    """

    labels: Mapping[int, str] = field(default_factory=dict)
    input_size: tuple[int, int] | None = None
    recipe: Recipe = field(default_factory=Recipe)
    source_sha256: str | None = None
    tool_versions: Mapping[str, str] = field(default_factory=dict)
    build: Mapping[str, Any] = field(default_factory=dict)
    postprocessing: Postprocessing = field(default_factory=Postprocessing)


def _loads(key: str, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise MetadataError(f"model metadata {key!r} is not JSON: {text[:80]!r}") from exc


def parse_metadata(props: Mapping[str, str]) -> ModelMetadata:
    """Read minescan's entries from a ``metadata_props``-like mapping."""
    labels: dict[int, str] = {}
    if LABELS_KEY in props:
        raw = _loads(LABELS_KEY, props[LABELS_KEY])
        if not isinstance(raw, dict):
            raise MetadataError(f"model metadata {LABELS_KEY!r} must map class ids to names, got {raw!r}")
        try:
            labels = {int(k): str(v) for k, v in raw.items()}
        except ValueError as exc:
            raise MetadataError(f"model metadata {LABELS_KEY!r} has a non-integer class id: {raw!r}") from exc
    input_size = None
    if INPUT_SIZE_KEY in props:
        raw = _loads(INPUT_SIZE_KEY, props[INPUT_SIZE_KEY])
        if raw is not None:
            if not (isinstance(raw, list) and len(raw) == 2 and all(isinstance(v, int) and v > 0 for v in raw)):
                raise MetadataError(f"model metadata {INPUT_SIZE_KEY!r} must be [height, width], got {raw!r}")
            input_size = (raw[0], raw[1])
    recipe = Recipe.from_json(_loads(PREPROCESSING_KEY, props[PREPROCESSING_KEY])) if PREPROCESSING_KEY in props else Recipe()
    tool_versions = _loads(TOOL_VERSIONS_KEY, props[TOOL_VERSIONS_KEY]) if TOOL_VERSIONS_KEY in props else {}
    build = _loads(BUILD_KEY, props[BUILD_KEY]) if BUILD_KEY in props else {}
    postprocessing = (
        Postprocessing.from_json(_loads(POSTPROCESSING_KEY, props[POSTPROCESSING_KEY])) if POSTPROCESSING_KEY in props else Postprocessing()
    )
    return ModelMetadata(
        labels=labels,
        input_size=input_size,
        recipe=recipe,
        source_sha256=props.get(SOURCE_SHA256_KEY),
        tool_versions=tool_versions,
        build=build,
        postprocessing=postprocessing,
    )


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
    return props
