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
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from minescan.errors import MinescanError

BACKENDS = ("auto", "cpu", "cuda", "tensorrt")
ENGINE_SUFFIXES = (".engine", ".plan")
CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
_PROVIDERS = {"cpu": (CPU,), "cuda": (CUDA, CPU), "tensorrt": (TENSORRT, CUDA, CPU)}
_GPU_PACKAGE = "install onnxruntime-gpu in place of onnxruntime"


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


def plan_backend(path: str | Path, requested: str, available: Sequence[str]) -> BackendPlan:
    """Plan the backend for ``path`` given ONNX Runtime's ``available`` providers."""
    if requested not in BACKENDS:
        raise BackendError(f"unknown backend {requested!r}: choose one of {', '.join(BACKENDS)}")
    if is_engine_file(path):
        if requested not in ("auto", "tensorrt"):
            raise BackendError(
                f"{path} is a TensorRT engine, which runs only with backend tensorrt (or auto); "
                f"give the .onnx model to run on {requested}"
            )
        return BackendPlan(requested, engine=True)
    if requested == "auto":
        if CUDA in available:
            return BackendPlan(requested, engine=False, providers=_PROVIDERS["cuda"])
        # No GPU package installed: the CPU is what the user has, and the default needs no notice.
        return BackendPlan(requested, engine=False, providers=_PROVIDERS["cpu"])
    wanted = _PROVIDERS[requested][0]
    if wanted not in available:
        raise BackendError(
            f"backend {requested} needs ONNX Runtime's {wanted}, which this ONNX Runtime lacks "
            f"(it has {', '.join(available) or 'none'}): {_GPU_PACKAGE}"
        )
    return BackendPlan(requested, engine=False, providers=_PROVIDERS[requested])


def check_providers(plan: BackendPlan, active: Sequence[str], model: str | Path) -> str | None:
    """The notice for a session running on ``active`` providers: fail if an explicit GPU request fell back."""
    wanted = plan.providers[0]
    if not active or active[0] == wanted:
        return plan.notice
    fallback = f"ONNX Runtime could not start {wanted} for {model} and fell back to {active[0]}"
    if plan.requested != "auto":
        raise BackendError(f"backend {plan.requested}: {fallback} (are the CUDA/cuDNN libraries and a GPU present?)")
    return f"backend auto: {fallback}; running on the CPU"
