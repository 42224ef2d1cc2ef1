"""The change rule: when two detections are one site and when a site changed; defaults in one place.

Pure Python (no numpy, no GDAL): the command line reads the defaults for its help before any command runs.
The rule's meaning in full is in :mod:`minescan.change.match`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from minescan.errors import SettingError


@dataclass(frozen=True)
class ChangeRule:
    """When two detections are one site and when a site changed; the one place of these defaults.

    ``min_iou`` 0.1: boxes of one site drawn on two dates by a detector differ a lot (tiles, thresholds, the
    site itself changes), so a low IoU still means the same place; ``min_cover`` 0.5: a site that grew a lot
    has a small IoU with its old box but holds it, and a split site's parts lie inside the old box, so half
    the smaller box inside the other also links them.  ``growth`` 0.25: box areas of one unchanged site vary by
    about 10-20% between dates (a box edge moves a few pixels), so a change must pass 25% (area x 1.25 or
    / 1.25) to count.  ``max_unobserved`` 0.5: a site is judged only where at least half of it was seen;
    above that an absence or a size says more about clouds than about the site.
    """

    min_iou: float = 0.1
    min_cover: float = 0.5
    growth: float = 0.25
    max_unobserved: float = 0.5

    def __post_init__(self) -> None:
        for name in ("min_iou", "min_cover"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 < value <= 1):
                raise SettingError(name, value, "must be a number in (0, 1]")
        if not (isinstance(self.growth, (int, float)) and 0 < self.growth < math.inf):
            raise SettingError("growth", self.growth, "must be a positive number (0.25 = 25% larger or smaller)")
        if not (isinstance(self.max_unobserved, (int, float)) and 0 <= self.max_unobserved < 1):
            raise SettingError("max_unobserved", self.max_unobserved, "must be a number in [0, 1)")

    def as_dict(self) -> dict[str, float]:
        return {"min_iou": self.min_iou, "min_cover": self.min_cover, "growth": self.growth,
                "max_unobserved": self.max_unobserved}
