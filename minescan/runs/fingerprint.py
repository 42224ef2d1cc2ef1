"""What a scene's result depends on, reduced to one hash.

The model file's content hash, the scene's resolved plan (bands, nodata,
rendering, tiling, threshold, stitching and labels, after the product's
offset and nodata and the model's recipe are applied), the result format and
the resolved input.  A journal entry made under another
fingerprint is stale: the scene is scanned again.  Settings that change
speed but never results (batch size, reader threads) are left out, so tuning them
does not redo a night's work.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

from minescan.scan.plan import ScanPlan


def file_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's content, read in chunks (models run to hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fingerprint(model_digest: str, plan: ScanPlan, result_format: str) -> str:
    """The hash of everything the scene's result depends on (see the module docstring)."""
    described = {
        "model": model_digest,
        "settings": plan.result_settings(),
        "source": {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(plan.source).items()},
        "format": result_format,
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()
