"""Metadata that minescan keeps inside an ONNX model file.

An exported model carries what a scan needs to run it without repeating flags:
the label map, the input size it was exported for, the preprocessing
recipe (which bands, which gain and offset make its uint8 RGB) and, when its
owner set one, the postprocessing recipe (``drop_parts``: see
:mod:`minescan.tiling.parts`).  They live in
the ONNX ``metadata_props`` under the ``minescan.`` prefix, each value a JSON
document, so any ONNX tool shows them and ONNX Runtime returns them through
``InferenceSession.get_modelmeta().custom_metadata_map``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping

import onnx

LABELS_KEY = "minescan.labels"
INPUT_SIZE_KEY = "minescan.input_size"
PREPROCESSING_KEY = "minescan.preprocessing"
SOURCE_SHA256_KEY = "minescan.source_sha256"
TOOL_VERSIONS_KEY = "minescan.tool_versions"
BUILD_KEY = "minescan.build"
POSTPROCESSING_KEY = "minescan.postprocessing"


class MetadataError(ValueError):
    """A ``minescan.*`` metadata entry is not what it should be."""


@dataclass(frozen=True)
class ModelMetadata:
    """What minescan reads back from a model's metadata.

    ``labels`` maps 1-based class ids to names; ``input_size`` is (height,
    width) or None for any size; ``preprocessing`` holds the recipe keys
    ``bands`` (1-based list), ``gain``, ``offset`` and ``scale``; ``build``
    how the file was made (target, precision, input size, calibration);
    ``postprocessing`` the scan defaults the model's owner chose (``drop_parts``).
    """

    labels: Mapping[int, str] = field(default_factory=dict)
    input_size: tuple[int, int] | None = None
    preprocessing: Mapping[str, Any] = field(default_factory=dict)
    source_sha256: str | None = None
    tool_versions: Mapping[str, str] = field(default_factory=dict)
    build: Mapping[str, Any] = field(default_factory=dict)
    postprocessing: Mapping[str, Any] = field(default_factory=dict)


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
    preprocessing = _loads(PREPROCESSING_KEY, props[PREPROCESSING_KEY]) if PREPROCESSING_KEY in props else {}
    if not isinstance(preprocessing, dict):
        raise MetadataError(f"model metadata {PREPROCESSING_KEY!r} must be an object, got {preprocessing!r}")
    tool_versions = _loads(TOOL_VERSIONS_KEY, props[TOOL_VERSIONS_KEY]) if TOOL_VERSIONS_KEY in props else {}
    build = _loads(BUILD_KEY, props[BUILD_KEY]) if BUILD_KEY in props else {}
    postprocessing = _loads(POSTPROCESSING_KEY, props[POSTPROCESSING_KEY]) if POSTPROCESSING_KEY in props else {}
    if not isinstance(postprocessing, dict) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1 for v in postprocessing.values()
    ):
        raise MetadataError(f"model metadata {POSTPROCESSING_KEY!r} must map settings to numbers in [0, 1], got {postprocessing!r}")
    return ModelMetadata(
        labels=labels,
        input_size=input_size,
        preprocessing=preprocessing,
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
        PREPROCESSING_KEY: json.dumps(dict(meta.preprocessing), sort_keys=True),
        TOOL_VERSIONS_KEY: json.dumps(dict(meta.tool_versions), sort_keys=True),
    }
    if meta.build:
        props[BUILD_KEY] = json.dumps(dict(meta.build), sort_keys=True)
    if meta.postprocessing:
        props[POSTPROCESSING_KEY] = json.dumps(dict(meta.postprocessing), sort_keys=True)
    if meta.source_sha256:
        props[SOURCE_SHA256_KEY] = meta.source_sha256
    return props


def write_metadata(model: onnx.ModelProto, meta: ModelMetadata) -> None:
    """Set minescan's entries on ``model`` in place, keeping any others."""
    props = metadata_props(meta)
    kept = [p for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def read_metadata(model: onnx.ModelProto) -> ModelMetadata:
    """minescan's entries of an in-memory ONNX model."""
    return parse_metadata({p.key: p.value for p in model.metadata_props})
