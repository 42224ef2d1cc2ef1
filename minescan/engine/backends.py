"""Which backend runs a model file: ``auto``, ``cpu``, ``cuda`` or ``tensorrt``.

Two kinds of model file, four backends:

- a TensorRT engine (``.engine``, ``.plan``, made by ``minescan build``) runs
  only on minescan's TensorRT backend; ``auto`` and ``tensorrt`` pick it;
- an ONNX model runs on ONNX Runtime with an execution provider: ``cpu``
  (CPUExecutionProvider), ``cuda`` (CUDAExecutionProvider) or ``tensorrt``
  (TensorrtExecutionProvider, which builds its engine when the session starts,
  minutes for a Faster R-CNN).  The GPU providers come with the
  ``onnxruntime-gpu`` package.  ``auto`` takes CUDA when ONNX Runtime offers
  it and otherwise the CPU (quietly: without a GPU package there is nothing
  to say); it never picks the
  TensorRT provider, whose start-up build is a cost to opt into (or to pay
  once with ``minescan build``).

ONNX Runtime lists a GPU provider whenever onnxruntime-gpu is installed, even
when the CUDA libraries or the GPU are missing, and then quietly runs on the
CPU.  :func:`check_providers` catches that after the session starts: an
explicit request fails, ``auto`` carries on with a notice.

``onnxruntime`` and ``onnxruntime-gpu`` install into the same ``onnxruntime/``
folder: with both installed there, whichever was installed last owns the files,
and upgrading either one silently swaps the build.  :func:`installed_onnxruntime`
tells that from the distributions' metadata in the folder ``onnxruntime`` imports
from (a GPU build in a folder of its own ahead on ``sys.path``, as
benchmarks/gpu_check.sh installs it, is no conflict); a GPU request then says, in
one line, how to keep only the GPU package (an error when the CPU build won, a
notice when the GPU build happens to be the one in place).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Sequence

from minescan.errors import MinescanError

BACKENDS = ("auto", "cpu", "cuda", "tensorrt")
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
_PROVIDERS = {"cpu": (CPU,), "cuda": (CUDA, CPU), "tensorrt": (TENSORRT, CUDA, CPU)}
_GPU_PACKAGE = "install onnxruntime-gpu in place of onnxruntime: pip uninstall -y onnxruntime, then pip install 'minescan[gpu]'"
CPU_DISTRIBUTION = "onnxruntime"
GPU_DISTRIBUTIONS = ("onnxruntime-gpu",)  # distributions of the same onnxruntime/ folder with the CUDA/TensorRT providers


class BackendError(MinescanError):
    """The backend asked for cannot run this model here."""


class TensorRTUnavailableError(BackendError):
    """The TensorRT Python package is missing or cannot load its libraries."""


@dataclass(frozen=True)
class BackendPlan:
    """How to load a model: a TensorRT engine, or ONNX Runtime with ``providers`` in order of preference.

    ``notice`` says why ``auto`` settled for less than a GPU; None otherwise.
    """

    requested: str
    engine: bool
    providers: tuple[str, ...] = ()
    notice: str | None = None


def is_engine_file(path: str | Path) -> bool:
    """Whether ``path`` names a serialized TensorRT engine rather than an ONNX model."""
    return Path(path).suffix.lower() in ENGINE_SUFFIXES


def onnxruntime_folder() -> Path | None:
    """The folder (a site-packages) the ``onnxruntime`` package imports from; None without one.  Imports nothing."""
    spec = importlib.util.find_spec("onnxruntime")
    locations = list(spec.submodule_search_locations or ()) if spec else []
    return Path(locations[0]).parent if locations else None


def installed_onnxruntime(folder: str | Path | None = None) -> tuple[str, ...]:
    """The ONNX Runtime distributions (``onnxruntime``, ``onnxruntime-gpu``) whose metadata is in ``folder``.

    ``folder``: default :func:`onnxruntime_folder`, the one that decides which build imports.
    Reads only the distributions' metadata (milliseconds).
    """
    folder = onnxruntime_folder() if folder is None else Path(folder)
    if folder is None:
        return ()
    return tuple(name for name in (CPU_DISTRIBUTION, *GPU_DISTRIBUTIONS)
                 if next(iter(metadata.distributions(name=name, path=[str(folder)])), None) is not None)


def onnxruntime_conflict(installed: Sequence[str]) -> str | None:
    """One line saying what to do when the CPU and a GPU build of ONNX Runtime are both ``installed``; else None."""
    gpu = [name for name in installed if name in GPU_DISTRIBUTIONS]
    if CPU_DISTRIBUTION not in installed or not gpu:
        return None
    return (f"{CPU_DISTRIBUTION} and {gpu[0]} are both installed and share one onnxruntime/ folder, so the build in "
            f"use is whichever was installed last: run 'pip uninstall -y {CPU_DISTRIBUTION} {gpu[0]}', then "
            f"'pip install {gpu[0]}'")


def plan_backend(path: str | Path, requested: str, available: Sequence[str],
                 installed: Sequence[str] | None = None) -> BackendPlan:
    """Plan the backend for ``path`` given ONNX Runtime's ``available`` providers.

    ``installed``: the ONNX Runtime distributions (default: :func:`installed_onnxruntime`, read only
    when a GPU may be used, never for ``cpu``); both the CPU and a GPU build installed make an
    explicit GPU request without its provider an error saying so, and otherwise a notice.
    """
    if requested not in BACKENDS:
        raise BackendError(f"unknown backend {requested!r}: choose one of {', '.join(BACKENDS)}")
    if is_engine_file(path):
        if requested not in ("auto", "tensorrt"):
            raise BackendError(
                f"{path} is a TensorRT engine, which runs only with backend tensorrt (or auto); "
                f"give the .onnx model to run on {requested}"
            )
        return BackendPlan(requested, engine=True)
    if requested == "cpu":
        return BackendPlan(requested, engine=False, providers=_PROVIDERS["cpu"])
    conflict = onnxruntime_conflict(installed_onnxruntime() if installed is None else installed)
    if requested == "auto":
        if CUDA in available:
            return BackendPlan(requested, engine=False, providers=_PROVIDERS["cuda"], notice=conflict)
        # No GPU package installed: the CPU is what the user has, and the default needs no notice.
        notice = f"backend auto: running on the CPU; {conflict}" if conflict else None
        return BackendPlan(requested, engine=False, providers=_PROVIDERS["cpu"], notice=notice)
    wanted = _PROVIDERS[requested][0]
    if wanted not in available:
        raise BackendError(
            f"backend {requested} needs ONNX Runtime's {wanted}, which this ONNX Runtime lacks "
            f"(it has {', '.join(available) or 'none'}): {conflict or _GPU_PACKAGE}"
        )
    return BackendPlan(requested, engine=False, providers=_PROVIDERS[requested], notice=conflict)


def check_providers(plan: BackendPlan, active: Sequence[str], model: str | Path) -> str | None:
    """The notice for a session running on ``active`` providers: fail if an explicit GPU request fell back."""
    wanted = plan.providers[0]
    if not active or active[0] == wanted:
        return plan.notice
    fallback = f"ONNX Runtime could not start {wanted} for {model} and fell back to {active[0]}"
    if plan.requested != "auto":
        # A plan's notice for a GPU provider is the two-builds conflict (plan_backend), a likely cause too.
        also = f"; also: {plan.notice}" if plan.notice else ""
        raise BackendError(f"backend {plan.requested}: {fallback} (are the CUDA/cuDNN libraries and a GPU present?{also})")
    return f"backend auto: {fallback}; running on the CPU" + (f"; {plan.notice}" if plan.notice else "")
