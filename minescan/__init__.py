"""minescan: scan whole Sentinel-2 scenes for mining sites.

The public API is :class:`Scanner` (:mod:`minescan.scan.scanner`)::

    from minescan import Scanner
    result = Scanner("model.onnx").scan("scene.tif")
    result.write("detections.gpkg")

The package's folders name the stages: :mod:`minescan.model` (pure values:
contract, metadata, detections, labels), :mod:`minescan.engine` (backends),
:mod:`minescan.raster` (scenes, tile grid, strip reader, radiometry, input
sources), :mod:`minescan.scan` (plan, stream, stitching, bench),
:mod:`minescan.results` (writers, readers, evaluation), :mod:`minescan.runs`
(resumable multi-scene runs), :mod:`minescan.export` (SavedModel -> ONNX ->
TensorRT-ready) and :mod:`minescan.cli`.  ``import minescan`` loads none of
them until :class:`Scanner` is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Scanner", "ScanResult", "ScanOptions", "ScanPlan", "MinescanError", "__version__"]

if TYPE_CHECKING:
    from minescan.errors import MinescanError
    from minescan.scan.plan import ScanOptions, ScanPlan
    from minescan.scan.scanner import Scanner, ScanResult


def __getattr__(name: str) -> Any:
    """The public names, imported on first use (so ``import minescan`` stays cheap)."""
    if name in ("Scanner", "ScanResult"):
        from minescan.scan import scanner

        return getattr(scanner, name)
    if name in ("ScanOptions", "ScanPlan"):
        from minescan.scan import plan

        return getattr(plan, name)
    if name == "MinescanError":
        from minescan.errors import MinescanError

        return MinescanError
    raise AttributeError(f"module 'minescan' has no attribute {name!r}")
