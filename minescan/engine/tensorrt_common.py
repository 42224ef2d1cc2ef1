"""What ``minescan build`` and the TensorRT backend share: the import, types and the build target.

Importing this module imports TensorRT; where TensorRT is missing (or only its
type stubs are installed, which Python imports as an empty namespace package)
it raises :class:`TensorRTUnavailableError` with the reason, so callers import
it lazily and the rest of minescan works without TensorRT.
"""

from __future__ import annotations

import numpy as np

from minescan.engine.backends import TensorRTUnavailableError
from minescan.model.contract import ContractError, TensorSpec
from minescan.engine.cuda_runtime import GpuInfo
from minescan.engine.engine_sidecar import BuildTarget

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


def build_target(gpu: GpuInfo) -> BuildTarget:
    """This TensorRT on ``gpu``: what an engine built or run here is tied to."""
    return BuildTarget(tensorrt_version=trt.__version__, gpu_name=gpu.name, compute_capability=gpu.compute_capability)


__all__ = ["LOGGER", "build_target", "dims", "numpy_dtype", "trt", "tensor_spec"]
