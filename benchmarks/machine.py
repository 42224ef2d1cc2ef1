"""The machine a benchmark ran on, for the header of its table."""

from __future__ import annotations

import os
import platform
from pathlib import Path

# Integer dot-product and vector extensions that decide CPU inference speed (INT8 above all).
_ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


def cpu_description() -> str:
    """CPU model, usable cores and its vector extensions, e.g. 'AMD EPYC, 2 cores (avx2, avx512f, avx512_vnni)'."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    lines = info.splitlines()
    name = next((l.split(":", 1)[1].strip() for l in lines if l.startswith("model name")), platform.processor() or "unknown CPU")
    flags = set(next((l.split(":", 1)[1].split() for l in lines if l.startswith("flags")), []))
    isa = [f for f in _ISA_FLAGS if f in flags]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{name}, {cores} cores ({', '.join(isa) or 'no AVX2'})"
