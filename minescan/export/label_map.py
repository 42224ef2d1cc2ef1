"""The TF Object Detection API label map (``label_map.pbtxt``).

The OD API keeps class names outside the SavedModel, in a text protobuf of
``item { id: 1 name: 'illegal_mining' }`` entries whose ids are the 1-based
``detection_classes`` values.  Users keep it next to (or one level above) the
exported ``saved_model`` directory; the exporter reads it into the ONNX
metadata so a scan needs no separate labels file.  The format is parsed with a
small regex rather than the OD API's protobuf definitions, which would pull in
the whole OD API.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from minescan.model.labels import parse_label_map
from minescan.export.errors import ExportError
from minescan.results.atomic import write_atomically

__all__ = ["LABEL_MAP_NAME", "find_label_map", "parse_label_map", "read_label_map", "write_label_map"]

LABEL_MAP_NAME = "label_map.pbtxt"

def read_label_map(path: str | Path) -> dict[int, str]:
    """Class id → name from a ``label_map.pbtxt`` file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ExportError(f"cannot read label map {path}: {exc.strerror}") from exc
    return parse_label_map(text, str(path))


def find_label_map(saved_model_dir: str | Path, levels: int = 2) -> Path | None:
    """The ``label_map.pbtxt`` in ``saved_model_dir`` or up to ``levels`` directories above it."""
    directory = Path(saved_model_dir).resolve()
    for candidate in [directory, *directory.parents][: levels + 1]:
        if (candidate / LABEL_MAP_NAME).is_file():
            return candidate / LABEL_MAP_NAME
    return None


def write_label_map(path: str | Path, labels: Mapping[int, str]) -> None:
    """Write ``labels`` in the OD API's label map format."""
    items = (f"item {{\n  id: {class_id}\n  name: '{name}'\n}}\n" for class_id, name in sorted(labels.items()))
    write_atomically(path, "".join(items).encode("utf-8"))
