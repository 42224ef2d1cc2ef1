"""minescan's metadata on an in-memory ONNX model (the values live in :mod:`minescan.model.metadata`, which imports no onnx)."""

from __future__ import annotations

import onnx

from minescan.model.metadata import ModelMetadata, metadata_props, parse_metadata


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
