"""What ``minescan build`` and the TensorRT backend share: the import, types and the build target.

Importing this module imports TensorRT; where TensorRT is missing (or only its
type stubs are installed, which Python imports as an empty namespace package)
it raises :class:`TensorRTUnavailableError` with the reason, so callers import
it lazily and the rest of minescan works without TensorRT.
"""

from __future__ import annotations

from importlib import metadata
from typing import Callable, TypeVar

import numpy as np

from minescan.engine.backends import TensorRTUnavailableError
from minescan.model.contract import ContractError, TensorSpec
from minescan.engine.cuda_runtime import CudaError, CudaUnavailableError, GpuInfo, driver_cuda_version
from minescan.engine.engine_sidecar import BuildTarget

_T = TypeVar("_T")
_INSTALL = "install NVIDIA's TensorRT wheels (pip install 'minescan[gpu]') on a machine with an NVIDIA GPU and driver"

try:
    import tensorrt as trt
except (ImportError, OSError) as _exc:
    raise TensorRTUnavailableError(f"TensorRT is not available ({_exc}): {_INSTALL}") from _exc
if not hasattr(trt, "Builder"):
    raise TensorRTUnavailableError(f"TensorRT is not available (the 'tensorrt' package here has no Builder: stubs only?): {_INSTALL}")

LOGGER = trt.Logger(trt.Logger.WARNING)
"""One logger for every builder and runtime, as TensorRT recommends; warnings and errors go to stderr."""

_DTYPES: dict[trt.DataType, tuple[str, type[np.generic]]] = {
    trt.DataType.FLOAT: ("float", np.float32),
    trt.DataType.HALF: ("float16", np.float16),
    trt.DataType.INT8: ("int8", np.int8),
    trt.DataType.INT32: ("int32", np.int32),
    trt.DataType.INT64: ("int64", np.int64),
    trt.DataType.UINT8: ("uint8", np.uint8),
    trt.DataType.BOOL: ("bool", np.bool_),
}


def dims(shape: trt.Dims) -> tuple[int, ...]:
    """A TensorRT shape as a tuple; -1 marks a dimension known only at run time."""
    return tuple(shape[i] for i in range(len(shape)))


def numpy_dtype(dtype: trt.DataType, name: str) -> np.dtype:
    """The numpy dtype of a TensorRT tensor type; refuse types numpy lacks (bf16, fp8, int4)."""
    if dtype not in _DTYPES:
        raise ContractError(f"tensor {name!r} is {dtype}, which minescan cannot read back")
    return np.dtype(_DTYPES[dtype][1])


def tensor_spec(name: str, dtype: trt.DataType, shape: tuple[int, ...]) -> TensorSpec:
    """A tensor in the terms of :func:`minescan.model.contract.check_contract` (-1 -> None)."""
    type_name = _DTYPES[dtype][0] if dtype in _DTYPES else str(dtype)
    return TensorSpec(name, type_name, tuple(d if d >= 0 else None for d in shape))


def wheel_cuda_major() -> str | None:
    """The CUDA major version the installed TensorRT wheels are built for (their ``-cuNN`` name), None if unknown."""
    for major in ("13", "12", "11"):
        for part in ("bindings", "libs"):
            try:
                metadata.version(f"tensorrt-cu{major}-{part}")
            except metadata.PackageNotFoundError:
                continue
            return major
    return None


def _driver_cuda() -> str:
    try:
        version = driver_cuda_version()
    except (CudaError, CudaUnavailableError) as exc:
        return f"unknown ({exc})"
    return f"{version[0]}.{version[1]}" if version else "none (no NVIDIA driver)"


def start(factory: Callable[[], _T | None], what: str) -> _T:
    """``factory()``, a TensorRT ``Runtime`` or ``Builder``; raise :class:`TensorRTUnavailableError` when it fails.

    TensorRT cannot start when the driver is older than the CUDA its wheel was built for (it logs
    "CUDA initialization failure with error: 35"); its Python binding then raises TypeError ("factory
    function returned nullptr").  The message names both versions instead.
    """
    try:
        made = factory()
        cause = "it returned None"
    except (TypeError, RuntimeError) as exc:
        made, cause = None, f"{type(exc).__name__}: {exc}"
    if made is None:
        major = wheel_cuda_major()
        wheel = f"CUDA {major}" if major else "a CUDA major not known here (no tensorrt-cuNN package found)"
        raise TensorRTUnavailableError(
            f"TensorRT {trt.__version__} could not create its {what} ({cause}); its wheels are built for {wheel} "
            f"and this machine's NVIDIA driver supports CUDA {_driver_cuda()}: check that the driver supports "
            "that CUDA major (update the driver, or install the tensorrt-cuNN wheels of the driver's CUDA major)"
        )
    return made


def create_runtime() -> trt.Runtime:
    """A TensorRT runtime on :data:`LOGGER`; see :func:`start` for the failure."""
    return start(lambda: trt.Runtime(LOGGER), "runtime")


def create_builder() -> trt.Builder:
    """A TensorRT builder on :data:`LOGGER`; see :func:`start` for the failure."""
    return start(lambda: trt.Builder(LOGGER), "builder")


def build_target(gpu: GpuInfo) -> BuildTarget:
    """This TensorRT on ``gpu``: what an engine built or run here is tied to."""
    return BuildTarget(tensorrt_version=trt.__version__, gpu_name=gpu.name, compute_capability=gpu.compute_capability)


__all__ = [
    "LOGGER", "build_target", "create_builder", "create_runtime", "dims", "numpy_dtype", "start", "trt", "tensor_spec",
    "wheel_cuda_major",
]
