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


_ITEM = re.compile(r"item\s*\{(?P<body>[^}]*)\}", re.S)
_ID = re.compile(r"\bid\s*:\s*(\d+)")
_NAME = re.compile(r"""\b(?:display_name|name)\s*:\s*["']([^"']*)["']""")


def parse_label_map(text: str, source: str = "label map") -> dict[int, str]:
    """Labels of an OD API ``label_map.pbtxt`` (``display_name`` preferred over ``name``)."""
    labels: dict[int, str] = {}
    for item in _ITEM.finditer(text):
        body = item.group("body")
        ident = _ID.search(body)
        display = re.search(r"""\bdisplay_name\s*:\s*["']([^"']*)["']""", body)
        name = display or _NAME.search(body)
        if not ident or not name:
            raise LabelsError(f"{source}: item without id or name: {' '.join(body.split())[:80]!r}")
        labels[int(ident.group(1))] = name.group(1)
    if not labels:
        raise LabelsError(f"{source}: no 'item {{ id: ... name: ... }}' entries")
    return labels


def parse_labels(value: str) -> dict[int, str]:
    """Labels from a ``--labels`` value: a file (.json or .pbtxt) or a comma-separated list."""
    path = Path(value)
    if path.suffix.lower() in (".json", ".pbtxt", ".txt") or path.is_file():
        if not path.is_file():
            raise LabelsError(f"--labels {value}: file not found")
        text = path.read_text()
        if path.suffix.lower() == ".json":
            try:
                raw = json.loads(text)
                return {int(k): str(v) for k, v in raw.items()}
            except (json.JSONDecodeError, AttributeError, ValueError) as exc:
                raise LabelsError(f"--labels {value}: expected a JSON object of id: name ({exc})") from exc
        return parse_label_map(text, str(path))
    names = [n.strip() for n in value.split(",")]
    if not all(names):
        raise LabelsError(f"--labels {value!r}: empty name in the list")
    return {i + 1: n for i, n in enumerate(names)}
