"""Argument types and the translation of library errors into the command line's words.

Types here check only the *shape* of a value (``3,2,1`` is three integers);
ranges are checked once, by :class:`~minescan.scan.plan.ScanOptions`, for the
API and the command line alike.  Its :class:`~minescan.scan.plan.OptionError`
names a setting as the API spells it (``score_threshold``); :func:`flag`
turns that into the option the user typed (``--score-threshold``).
"""

from __future__ import annotations

import argparse

# Settings whose flag is not "--" + the name with dashes.
_FLAGS = {"product_offset": "--boa-offset / --no-boa-offset"}


def flag(option: str) -> str:
    """The command-line flag of the ScanOptions field ``option``."""
    return _FLAGS.get(option, "--" + option.replace("_", "-"))


def bands(value: str) -> tuple[int, ...]:
    try:
        numbers = tuple(int(v) for v in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 1-based band indexes like 3,2,1, got {value!r}") from None
    if len(numbers) != 3:
        raise argparse.ArgumentTypeError(f"expected 3 band indexes (red, green, blue), got {value!r}")
    return numbers


def percentiles(value: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH percentiles like 2,98, got {value!r}") from None
    return low, high


def positive(kind):
    """An argparse type for positive numbers of ``kind`` (int or float)."""
    return _bounded(kind, zero_allowed=False)


def nonnegative(kind):
    """An argparse type for numbers of ``kind`` (int or float) that are 0 or more."""
    return _bounded(kind, zero_allowed=True)


def _bounded(kind, *, zero_allowed: bool):
    def parse(value: str):
        try:
            number = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {'whole ' if kind is int else ''}number, got {value!r}") from None
        if number < 0 or (number == 0 and not zero_allowed):
            raise argparse.ArgumentTypeError(f"must be {'0 or more' if zero_allowed else 'positive'}, got {value}")
        return number

    return parse


def class_ids(value: str) -> tuple[int, ...]:
    """Class ids like 3,8,9,10 (0 allowed: SCL's no data)."""
    try:
        return tuple(int(v) for v in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected class ids like 3,8,9,10, got {value!r}") from None


def int_list(value: str) -> list[int]:
    try:
        numbers = [int(v) for v in value.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 1,4,8, got {value!r}") from None
    if any(n <= 0 for n in numbers):
        raise argparse.ArgumentTypeError(f"values must be positive, got {value!r}")
    return numbers


def recipe_options() -> argparse.ArgumentParser:
    """--bands, --gain, --offset, --scale: how a scene becomes the model's RGB (shared by scan, bench and export)."""
    from minescan.defaults import DEFAULTS

    parent = argparse.ArgumentParser(add_help=False)
    g = parent.add_argument_group("radiometry")
    g.add_argument("--bands", type=bands, help="1-based red,green,blue band indexes, e.g. 3,2,1 for a B02,B03,B04,B08 stack "
                   "(default: the product's, else the model's recipe, else colour interpretation or B04/B03/B02 descriptions)")
    g.add_argument("--gain", type=float, help=f"true-colour gain on reflectance (default: the model's, else {DEFAULTS.gain:g})")
    g.add_argument("--offset", type=float, help="added to pixel values before / scale, e.g. -1000 for L2A baseline >= 04.00 "
                   f"(default: the product's, else the model's, else {DEFAULTS.offset:g})")
    g.add_argument("--scale", type=float, help="pixel values per unit reflectance (default: the model's, else "
                   f"{DEFAULTS.scale:g}; float scenes holding reflectance 0-1: 1)")
    return parent


def max_memory(value: str | None) -> int | None:
    """The bytes of ``--max-memory VALUE`` (None when not given), e.g. ``2G`` or ``1500M``.

    Parsed when the command runs rather than by argparse, so a malformed size is
    one line (``minescan: error: --max-memory 'abc' ...``) like every other fault.
    """
    from minescan.engine.memory_budget import MemoryBudgetError, parse_size

    if value is None:
        return None
    try:
        return parse_size(value)
    except MemoryBudgetError:
        raise MemoryBudgetError(f"--max-memory {value!r} not understood: give a size such as 2G, 1500M or "
                                "a number of bytes (binary units: 1G = 1024M)") from None


def add_max_memory(group) -> None:
    """``--max-memory SIZE`` (scan, bench): the budget for the calls in flight (minescan.engine.memory_budget)."""
    from minescan.defaults import DEFAULTS

    group.add_argument("--max-memory", metavar="SIZE",
                       help="memory the scan may use, e.g. 2G or 1500M: no more inference calls run at once than fit, "
                       f"and a model whose one call does not fit is refused (default {DEFAULTS.memory_share * 100:.0f}%% of "
                       "the machine's RAM, never refusing: at least one call runs)")
