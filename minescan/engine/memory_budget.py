"""How many inference calls a scan runs at once on the CPU, with how many threads each, within a memory budget.

A model's cost is measured, not guessed: :func:`probe_call` runs one batch of
zero tiles through the freshly loaded session and records its seconds per
tile and how far the process's resident memory grew during the call (Linux
``VmHWM``, reset first).  The ONNX file's initializer bytes do not predict
that growth: the ResNet-50 fixture Faster R-CNN has 106 MB of weights and
grows by about 660 MiB in one 640 px call (activations of 300 proposals),
the demo detector (0.7 MB) by 11-20 MiB.  The first call is also the one where
ONNX Runtime allocates, so the probe doubles as a warm-up.  The growth is
what a fresh process (the command line's) sees; a process that ran the model
before may reuse memory it freed, and the growth then reads low (down to 0).
The probe runs on the session a costly model keeps (without ONNX Runtime's
memory patterns: :data:`~minescan.engine.onnxruntime_backend.SESSION_MEMORY_SETTINGS`,
all cores' threads unless the caller chose), so a costly model is measured
as it will run; a cheap model's session is rebuilt after it.

:func:`choose_split` then decides (intra-op threads per call, concurrent
calls), for what the caller did not give:

* **cheap models** (a tile under :attr:`~minescan.defaults.Defaults.costly_call_s`)
  keep one 1-thread call per core (:meth:`~minescan.defaults.Defaults.cpu_split`):
  tiles are independent, and a call spread over several cores waits at the
  end of each small operator for its slowest thread;
* **costly models** get fewer calls with more threads: their operators are
  large enough for intra-op threads to pay, and every call in flight holds
  its own activations (measured in ``benchmarks/memory_defaults.md``);
* and never more calls in flight than fit the budget: the process with the
  model loaded + calls x one call's growth + an allowance for the reader and
  queues (:attr:`~minescan.defaults.Defaults.scan_reserve`).

Invariants: the split always has at least one call of at least one thread;
an *explicit* budget that cannot hold one call raises
:class:`MemoryBudgetError` (known at load, from the probe); the *default*
budget never refuses a model, it only caps the calls (one call is always
allowed, and :attr:`CpuSplit.reason` says it does not fit).  What the probe
cannot know in advance: a scan with larger tiles or a larger dynamic batch
than the probe's grows further (each call's activations scale with the
pixels it takes).
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from typing import Callable

from minescan.defaults import DEFAULTS, available_cores
from minescan.errors import MinescanError


class MemoryBudgetError(MinescanError):
    """A memory budget that is malformed, or too small for one inference call of the model."""


_UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes of a size such as ``2G``, ``1500M``, ``2GiB``, ``512MB`` or ``1073741824``; units are binary (1G = 2**30).

    Raises :class:`MemoryBudgetError` naming ``text`` for anything else (and for 0).
    """
    match = _SIZE.match(str(text))
    if not match:
        raise MemoryBudgetError(f"memory size {text!r} not understood: give bytes or a number with K, M, G or T "
                                "(binary units: 2G = 2 GiB), e.g. 2G or 1500M")
    size = int(float(match.group(1)) * _UNITS[match.group(2).upper()])
    if size <= 0:
        raise MemoryBudgetError(f"memory size {text!r} must be more than 0 bytes")
    return size


def format_size(size: float) -> str:
    """``1.9 GiB``, ``310 MiB``, ``12 KiB``, ``1 B``."""
    for unit, factor in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= factor:
            value = size / factor
            return f"{value:.1f} {unit}" if value < 10 and unit == "GiB" else f"{value:.0f} {unit}"
    return f"{size:.0f} B"


def total_memory() -> int | None:
    """This machine's physical memory in bytes (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


@dataclass(frozen=True)
class MemoryBudget:
    """The most resident memory a scan's process should use; ``explicit`` budgets refuse what does not fit."""

    bytes: int | None  # None: unbounded (the OS does not say how much memory there is)
    explicit: bool
    origin: str  # "option" or "default: half of 23.4 GiB RAM"

    @classmethod
    def of(cls, max_memory: int | str | None) -> "MemoryBudget":
        """The caller's budget (bytes, or a size text for :func:`parse_size`), else the default share of RAM."""
        if max_memory is not None:
            size = parse_size(max_memory) if isinstance(max_memory, str) else int(max_memory)
            if size <= 0:
                raise MemoryBudgetError(f"memory budget {max_memory!r} must be more than 0 bytes")
            return cls(size, True, "option")
        total = total_memory()
        if total is None:
            return cls(None, False, "default: unbounded (the machine's memory is unknown)")
        share = DEFAULTS.memory_share
        return cls(int(total * share), False, f"default: {share:.0%} of {format_size(total)} RAM")

    def describe(self) -> str:
        return f"budget {format_size(self.bytes)}" if self.bytes is not None else "no budget"


@dataclass(frozen=True)
class ModelCost:
    """One probe call's cost: seconds per tile, resident memory the call added, and the process's memory before it.

    ``call_bytes``/``base_bytes`` are None where the OS gives no resettable peak (not Linux).
    """

    seconds_per_tile: float
    call_bytes: int | None
    base_bytes: int | None
    tile: int  # px, the probe's tile side
    threads: int  # intra-op threads of the probed session

    def describe(self) -> str:
        memory = f", {format_size(self.call_bytes)} per call" if self.call_bytes is not None else ""
        return f"model: {self.seconds_per_tile:.2f} s/tile (first call){memory}"


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")  # VmHWM := VmRSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def probe_call(run: Callable[[], object], tiles: int, tile: int, threads: int) -> ModelCost:
    """Run ``run`` (one call on ``tiles`` tiles of ``tile`` px) once and measure it (see the module docstring)."""
    base = _status_kib("VmRSS")
    resettable = base is not None and _reset_peak()
    start = time.perf_counter()
    run()
    seconds = time.perf_counter() - start
    peak = _status_kib("VmHWM") if resettable else None
    grown = None if peak is None or base is None else max(0, peak - base)
    return ModelCost(seconds / max(1, tiles), grown, base if resettable else None, tile, threads)


@dataclass(frozen=True)
class CpuSplit:
    """(intra-op threads per call, concurrent calls) on the CPU and why, in words for the plan."""

    threads: int
    workers: int
    reason: str

    def describe(self) -> str:
        return f"{self.workers} call(s) x {self.threads} thread(s) ({self.reason})"


def choose_split(cost: ModelCost | None, budget: MemoryBudget, *, threads: int | None = None,
                 workers: int | None = None, cores: int | None = None) -> CpuSplit:
    """The split for ``cost`` within ``budget``; ``threads``/``workers`` the caller gave are kept (see the module docstring).

    Raises :class:`MemoryBudgetError` when an explicit budget cannot hold the
    calls asked for, or one call.
    """
    cores = cores or available_cores()
    notes = [cost.describe()] if cost is not None else []
    costly = cost is not None and cost.seconds_per_tile >= DEFAULTS.costly_call_s
    if threads is None and workers is None and costly:
        threads, chosen_workers = DEFAULTS.costly_split(cores)
        notes.append(f"costly model (>= {DEFAULTS.costly_call_s:g} s/tile): fewer calls, more threads")
    else:
        threads, chosen_workers = DEFAULTS.cpu_split(threads, workers, cores)
    fits = _calls_that_fit(cost, budget)
    if fits is not None:
        if fits < 1 or (workers is not None and workers > fits):
            if budget.explicit:
                raise MemoryBudgetError(_too_small(cost, budget, workers or 1))
            notes.append(f"{budget.describe()} [{budget.origin}] holds no call: 1 call anyway")
            chosen_workers = 1 if workers is None else workers
        elif workers is None and chosen_workers > fits:
            chosen_workers = fits
            notes.append(f"{budget.describe()} [{budget.origin}] holds {fits} call(s)")
            if not costly and threads is not None:
                threads = max(threads, cores // chosen_workers)  # the cores the dropped calls leave
        else:
            notes.append(f"{budget.describe()} [{budget.origin}]")
    elif budget.bytes is not None:
        notes.append(f"{budget.describe()} [{budget.origin}], not checked: no memory measure on this OS")
    return CpuSplit(threads, chosen_workers, "; ".join(notes) or "default")


def _calls_that_fit(cost: ModelCost | None, budget: MemoryBudget) -> int | None:
    """Calls in flight the budget holds besides the loaded model and the reader (None: cannot be known)."""
    if budget.bytes is None or cost is None or cost.call_bytes is None or cost.base_bytes is None:
        return None
    room = budget.bytes - cost.base_bytes - DEFAULTS.scan_reserve
    return room // max(1, cost.call_bytes) if room > 0 else 0


def _too_small(cost: ModelCost | None, budget: MemoryBudget, calls: int) -> str:
    assert cost is not None and cost.call_bytes is not None and cost.base_bytes is not None and budget.bytes is not None
    need = cost.base_bytes + calls * cost.call_bytes + DEFAULTS.scan_reserve
    return (f"memory budget {format_size(budget.bytes)} is too small: {calls} call(s) in flight need about "
            f"{format_size(need)} (process with the model loaded {format_size(cost.base_bytes)}, "
            f"{calls} x {format_size(cost.call_bytes)} per call, {format_size(DEFAULTS.scan_reserve)} for the reader and queues)")
