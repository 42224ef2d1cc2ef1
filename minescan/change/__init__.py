"""Change since the last scan: match sites of two dates and label each new, gone, grown, shrunk, unchanged or unknown.

:mod:`~minescan.change.rule` holds the rule and its defaults (pure Python); :mod:`~minescan.change.match` the
matching (shapely geometries in one projected CRS); :mod:`~minescan.change.compare` reads result files of two
dates (any number per date, any CRS) and writes the changes as a GeoPackage or GeoJSON layer.  Names are
loaded on first use, so importing the package (the command line does, for the rule's defaults) costs nothing.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "ChangeRule": "rule",
    "LABELS": "match", "Coverage": "match", "SiteChange": "match", "Sites": "match", "match_sites": "match",
    "ChangeError": "compare", "ChangeSet": "compare", "compare_results": "compare", "read_sites": "compare",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'minescan.change' has no attribute {name!r}")
    return getattr(importlib.import_module(f"minescan.change.{_WHERE[name]}"), name)
