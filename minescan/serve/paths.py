"""Scene paths a client may name: confined to the server's data root.

A client names a scene (a GeoTIFF, a ``.SAFE`` folder, a STAC item file) by its
path relative to ``--data-root``, or sends a STAC item inline whose asset
hrefs are such relative paths.  Refused, with a 4xx and one line: absolute
paths, any ``..`` component, URLs and schemes, NUL bytes, and a path that leaves
the root once symlinks are resolved (``Path.resolve`` follows every link, so a
link inside the root that points out is caught).  The check runs on the
resolved path the scan then opens, so what is checked is what is read.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

from minescan.serve.protocol import ProtocolError

MAX_PATH = 1024


def confined(root: Path, relative: Any, what: str = "scene") -> Path:
    """``relative`` under ``root`` (resolved), or a :class:`ProtocolError` (400/403/404) saying why not."""
    if not isinstance(relative, str) or not relative.strip():
        raise ProtocolError(f"'{what}' must be a path relative to the data root")
    if len(relative) > MAX_PATH or "\x00" in relative:
        raise ProtocolError(f"'{what}' is not a usable path")
    if urlparse(relative).scheme and len(urlparse(relative).scheme) > 1:
        raise ProtocolError(f"'{what}' {relative[:80]!r}: URLs are not served; give a path under the data root", 403)
    pure = PurePosixPath(relative.replace("\\", "/"))
    if pure.is_absolute() or Path(relative).is_absolute():
        raise ProtocolError(f"'{what}' {relative[:80]!r}: absolute paths are refused; give a path under the data root", 403)
    if ".." in pure.parts:
        raise ProtocolError(f"'{what}' {relative[:80]!r}: '..' is refused", 403)
    base = root.resolve()
    target = (base / pure).resolve()
    if target != base and base not in target.parents:
        raise ProtocolError(f"'{what}' {relative[:80]!r} leads outside the data root", 403)
    if not target.exists():
        raise ProtocolError(f"'{what}' {relative[:80]!r} does not exist under the data root", 404)
    return target


def inline_stac_item(root: Path, item: Any, folder: Path, name: str) -> Path:
    """Write an inline STAC item whose assets lie under ``root`` to ``folder/name.json``, hrefs made absolute."""
    if not isinstance(item, dict) or not isinstance(item.get("assets"), dict) or not item["assets"]:
        raise ProtocolError("'stac_item' must be a STAC item object with assets")
    assets = {}
    for key, asset in item["assets"].items():
        if not isinstance(asset, dict) or "href" not in asset:
            raise ProtocolError(f"stac_item asset {str(key)[:40]!r} has no href")
        assets[key] = {**asset, "href": str(confined(root, asset["href"], f"stac_item asset {str(key)[:40]}"))}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps({**item, "assets": assets}))
    return path
