"""Sentinel-2 L2A scene classification (SCL): the classes and which of them a scan masks.

The SCL band (20 m, also 60 m) of an L2A product gives each pixel one class
from Sen2Cor's classification (ESA, Sentinel-2 L2A product definition):

==  ==========================  ====================
id  class                       masked by default
==  ==========================  ====================
0   no data                     yes
1   saturated or defective      yes
2   dark area pixels            no
3   cloud shadows               yes
4   vegetation                  no
5   not vegetated               no
6   water                       no
7   unclassified                no
8   cloud, medium probability   yes
9   cloud, high probability     yes
10  thin cirrus                 yes
11  snow or ice                 yes
==  ==========================  ====================

Bare soil, open pits and tailings are "not vegetated" (5) and pit lakes
"water" (6): the mining sites themselves are never masked by default.
"""

from __future__ import annotations

from minescan.errors import SettingError

NO_DATA, SATURATED, DARK, CLOUD_SHADOW, VEGETATION, NOT_VEGETATED, WATER, UNCLASSIFIED = range(8)
CLOUD_MEDIUM, CLOUD_HIGH, THIN_CIRRUS, SNOW = 8, 9, 10, 11

NAMES = {
    NO_DATA: "no data", SATURATED: "saturated or defective", DARK: "dark area", CLOUD_SHADOW: "cloud shadow",
    VEGETATION: "vegetation", NOT_VEGETATED: "not vegetated", WATER: "water", UNCLASSIFIED: "unclassified",
    CLOUD_MEDIUM: "cloud (medium probability)", CLOUD_HIGH: "cloud (high probability)", THIN_CIRRUS: "thin cirrus",
    SNOW: "snow or ice",
}

DEFAULT_MASKED = (NO_DATA, SATURATED, CLOUD_SHADOW, CLOUD_MEDIUM, CLOUD_HIGH, THIN_CIRRUS, SNOW)
"""The classes a scan masks unless told otherwise (the table in the module docstring)."""


def check_classes(classes: tuple[int, ...]) -> tuple[int, ...]:
    """``classes`` as a sorted tuple of SCL ids; :class:`SettingError` (``mask_classes``) for an id outside 0-11."""
    classes = tuple(classes)
    for value in classes:
        if isinstance(value, bool) or not isinstance(value, int) or value not in NAMES:
            raise SettingError("mask_classes", value, f"is not an SCL class; classes are 0-11 ({describe(NAMES)})")
    return tuple(sorted(set(classes)))


def describe(classes) -> str:
    """``3 cloud shadow, 8 cloud (medium probability), ...``."""
    return ", ".join(f"{c} {NAMES[c]}" for c in sorted(classes))
