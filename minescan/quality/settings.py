"""A scan's quality plan: which mask applies to the scene, which tiles it keeps from the detector, what it flags.

Resolved once per scene by :func:`plan_quality` (called from
:func:`~minescan.scan.plan.plan_scan`), in this order:

=========================  ===================================================================
``mask`` (API setting)     what masks the scene
=========================  ===================================================================
None (default)             the product's SCL layer when it has one (an L2A ``.SAFE``), else none
``"scl"``                  the product's SCL layer; an error when the input has none
``"none"``                 no mask
a path                     that raster (0 = clear, else masked; :mod:`minescan.quality.read`)
=========================  ===================================================================

With a mask, a tile at least ``skip_masked`` masked is not scanned, and a
detection more than ``max_masked`` masked is flagged or dropped (``masked``:
``flag``/``drop``).  Defaults in :mod:`minescan.defaults`.
"""

from __future__ import annotations

from dataclasses import dataclass

from minescan.errors import SettingError
from minescan.quality.mask import QualityMask, tile_shares
from minescan.quality.scl import DEFAULT_MASKED, describe

MASK_CHOICES = ("scl", "none")
ACTIONS = ("flag", "drop")


@dataclass(frozen=True)
class QualityPlan:
    """The mask of one scan and what it does (see the module docstring); ``skip``: the (row, col) of tiles not scanned."""

    mask: QualityMask
    skip_masked: float
    max_masked: float
    action: str
    skip: frozenset[tuple[int, int]]
    origin: str  # where the mask came from: "product" (its SCL) or "option"

    def describe(self) -> str:
        """One line for the plan (``minescan scan --dry-run``)."""
        return (f"{self.mask.origin} [{self.origin}]: {self.mask.clear_share:.0%} of the scene clear; "
                f"{len(self.skip)} tile(s) at least {self.skip_masked:.0%} masked not scanned; detections over "
                f"{self.max_masked:.0%} masked {'dropped' if self.action == 'drop' else 'flagged'}")

    def settings(self) -> list:
        """What the result depends on (a run's fingerprint): the mask's source and classes, the three thresholds."""
        return [self.mask.origin, list(self.mask.classes or ()), self.skip_masked, self.max_masked, self.action]


def load_mask(setting: str | None, scl: str | None, classes: tuple[int, ...] | None, scene) -> tuple[QualityMask | None, str]:
    """The scene's mask for ``setting`` (see the module docstring) and where it came from; (None, reason) for none."""
    from minescan.quality.read import file_mask, scl_mask

    geometry = (scene.width, scene.height, scene.transform, scene.crs)
    if setting == "none":
        return None, "off [option]"
    if setting in (None, "scl"):
        if scl is None:
            if setting == "scl":
                raise SettingError("mask", setting, "the input has no SCL layer (only Sentinel-2 L2A .SAFE products carry "
                                                    "one); give a mask raster instead")
            return None, "the input carries no SCL layer (L1C, plain rasters: give a mask raster)"
        return scl_mask(scl, *geometry, classes or DEFAULT_MASKED), "product" if setting is None else "option"
    if classes is not None:
        raise SettingError("mask_classes", ",".join(map(str, classes)), f"select SCL classes; the mask {setting} is a "
                                                                       "raster of 0 = clear")
    return file_mask(setting, *geometry), "option"


def plan_quality(mask: QualityMask, origin: str, grid, skip_masked: float, max_masked: float, action: str) -> QualityPlan:
    """The quality plan of ``mask`` over the scan's tile ``grid``."""
    shares = tile_shares(mask, grid)
    skip = frozenset(place for place, share in shares.items() if share >= skip_masked)
    return QualityPlan(mask, skip_masked, max_masked, action, skip, origin)


__all__ = ["ACTIONS", "MASK_CHOICES", "QualityPlan", "load_mask", "plan_quality", "describe"]
