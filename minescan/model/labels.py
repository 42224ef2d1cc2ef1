"""Class labels: 1-based class ids to names.

They come from the model's metadata or from ``--labels``, which takes a
comma-separated list (``illegal_mining,legal_mining`` = ids 1, 2), a JSON
file mapping ids to names, or an Object Detection API ``label_map.pbtxt``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from minescan.errors import MinescanError


class LabelsError(MinescanError):
    """Labels that cannot be read."""


_ITEM = re.compile(r"item\s*\{([^}]*)\}", re.DOTALL)
_FIELD = re.compile(r"""(\w+)\s*:\s*(?:'([^']*)'|"([^"]*)"|(-?\d+))""")


def parse_label_map(text: str, source: str = "label map") -> dict[int, str]:
    """Class id -> name from OD API ``label_map.pbtxt`` text; ``display_name`` wins over ``name`` as in the OD API.

    Parsed with a small regex rather than the OD API's protobuf definitions,
    which would pull in the whole OD API.
    """
    labels: dict[int, str] = {}
    for item in _ITEM.finditer(text):
        fields = {m.group(1): next(g for g in m.groups()[1:] if g is not None) for m in _FIELD.finditer(item.group(1))}
        if "id" not in fields or not fields["id"].lstrip("-").isdigit():
            raise LabelsError(f"{source}: item without an integer id: {item.group(0).split()!r}")
        class_id = int(fields["id"])
        name = fields.get("display_name", fields.get("name"))
        if class_id < 1 or name is None:
            raise LabelsError(f"{source}: item {class_id} needs id >= 1 and a name: {item.group(0).split()!r}")
        if class_id in labels:
            raise LabelsError(f"{source}: class id {class_id} appears twice")
        labels[class_id] = name
    if not labels:
        raise LabelsError(f"{source}: no 'item {{ id: ... name: ... }}' entries")
    return labels


def parse_labels(value: str) -> dict[int, str]:
    """Labels from a ``--labels`` value: a file (.json or .pbtxt) or a comma-separated list."""
    path = Path(value)
    if path.suffix.lower() in (".json", ".pbtxt", ".txt") or path.is_file():
        if not path.is_file():
            raise LabelsError(f"labels file {value}: not found")
        text = path.read_text()
        if path.suffix.lower() == ".json":
            try:
                raw = json.loads(text)
                return {int(k): str(v) for k, v in raw.items()}
            except (json.JSONDecodeError, AttributeError, ValueError) as exc:
                raise LabelsError(f"labels file {value}: expected a JSON object of id: name ({exc})") from exc
        return parse_label_map(text, str(path))
    names = [n.strip() for n in value.split(",")]
    if not all(names):
        raise LabelsError(f"labels {value!r}: empty name in the list")
    return {i + 1: n for i, n in enumerate(names)}
