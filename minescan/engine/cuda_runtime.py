"""The CUDA runtime calls minescan makes, through cuda-python, in one place.

TensorRT runs on device memory and a CUDA stream that the caller provides.
This module owns both: a :class:`DeviceArena` holds one stream and named
device buffers that grow on demand, copies host arrays in and out on that
stream, and frees everything on :meth:`DeviceArena.close`.  Every CUDA call
goes through :func:`check`, which turns a failed ``cudaError_t`` into a
:class:`CudaError` naming the call and the error.

cuda-python has moved its runtime bindings: 12.6+ and 13.x have
``cuda.bindings.runtime``, older releases ``cuda.cudart``; both are tried.
Without cuda-python, or without a usable GPU and driver, the first call raises
:class:`CudaUnavailableError` with the reason.  Host buffers are ordinary
(pageable) numpy arrays; CUDA stages their copies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from minescan.errors import MinescanError

try:
    from cuda.bindings import runtime as _cudart
except ImportError:  # cuda-python < 12.6, or none
    try:
        from cuda import cudart as _cudart
    except ImportError:
        _cudart = None


class CudaUnavailableError(MinescanError):
    """cuda-python, a CUDA driver or a GPU is missing."""


class CudaError(MinescanError):
    """A CUDA runtime call failed."""


def _runtime() -> Any:
    if _cudart is None:
        raise CudaUnavailableError("cuda-python is not installed (pip install 'minescan[gpu]' or 'cuda-python')")
    return _cudart


def _error_name(error: Any) -> str:
    status, name = _runtime().cudaGetErrorName(error)
    return name.decode() if int(status) == 0 else f"cudaError {int(error)}"


def check(result: tuple[Any, ...], call: str) -> Any:
    """The value(s) of a cuda-python call's ``(error, *values)`` result; raise :class:`CudaError` on failure."""
    error, *values = result
    if int(error) != 0:
        raise CudaError(f"{call} failed: {_error_name(error)}")
    return values[0] if len(values) == 1 else tuple(values)


@dataclass(frozen=True)
class GpuInfo:
    """A CUDA device as engines are tied to it: name and compute capability ("8.9")."""

    index: int
    name: str
    compute_capability: str
    memory_bytes: int


def gpu_info(device: int = 0) -> GpuInfo:
    """Describe CUDA device ``device``; raise :class:`CudaUnavailableError` when there is none."""
    runtime = _runtime()
    error, count = runtime.cudaGetDeviceCount()
    if int(error) != 0:
        raise CudaUnavailableError(f"no usable CUDA GPU: cudaGetDeviceCount says {_error_name(error)}")
    if not device < count:
        raise CudaUnavailableError(f"no CUDA device {device}: this machine has {count}")
    props = check(runtime.cudaGetDeviceProperties(device), f"cudaGetDeviceProperties({device})")
    name = props.name.decode(errors="replace").rstrip("\x00") if isinstance(props.name, bytes) else str(props.name)
    return GpuInfo(device, name, f"{props.major}.{props.minor}", int(props.totalGlobalMem))


class DeviceArena:
    """One CUDA stream on one device and named device buffers; :meth:`close` frees them all."""

    def __init__(self, device: int = 0):
        gpu_info(device)  # a clear error when there is no GPU, before any allocation
        runtime = _runtime()
        check(runtime.cudaSetDevice(device), f"cudaSetDevice({device})")
        self._runtime = runtime
        self._stream = check(runtime.cudaStreamCreateWithFlags(runtime.cudaStreamNonBlocking), "cudaStreamCreateWithFlags")
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (address, capacity in bytes)

    @property
    def stream(self) -> int:
        """The stream handle, as TensorRT's ``execute_async_v3`` takes it."""
        return int(self._stream)

    def reserve(self, name: str, nbytes: int) -> int:
        """The address of buffer ``name`` with room for ``nbytes`` (at least 1), reallocated only when it must grow."""
        nbytes = max(nbytes, 1)
        address, capacity = self._buffers.get(name, (0, 0))
        if nbytes <= capacity:
            return address
        if address:
            check(self._runtime.cudaFree(address), f"cudaFree({name})")
            del self._buffers[name]
        address = int(check(self._runtime.cudaMalloc(nbytes), f"cudaMalloc({name}, {nbytes} bytes)"))
        self._buffers[name] = (address, nbytes)
        return address

    def address(self, name: str) -> int:
        """The current address of buffer ``name``."""
        return self._buffers[name][0]

    def upload(self, name: str, array: np.ndarray) -> int:
        """Queue a copy of ``array`` into buffer ``name`` (grown to fit); return the buffer's address."""
        host = np.ascontiguousarray(array)
        address = self.reserve(name, host.nbytes)
        kind = self._runtime.cudaMemcpyKind.cudaMemcpyHostToDevice
        check(self._runtime.cudaMemcpyAsync(address, host.ctypes.data, host.nbytes, kind, self._stream), f"copy {name} to the GPU")
        return address

    def download(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """Queue a copy of buffer ``name`` into a new host array; valid after :meth:`synchronize`."""
        host = np.empty(shape, dtype)
        address, capacity = self._buffers[name]
        if host.nbytes > capacity:
            raise CudaError(f"output {name} is {host.nbytes} bytes but its device buffer holds {capacity}")
        kind = self._runtime.cudaMemcpyKind.cudaMemcpyDeviceToHost
        check(self._runtime.cudaMemcpyAsync(host.ctypes.data, address, host.nbytes, kind, self._stream), f"copy {name} from the GPU")
        return host

    def synchronize(self) -> None:
        """Wait for everything queued on the stream."""
        check(self._runtime.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")

    def close(self) -> None:
        """Free every buffer and the stream; the arena is unusable afterwards."""
        buffers, self._buffers = self._buffers, {}
        for name, (address, _) in buffers.items():
            check(self._runtime.cudaFree(address), f"cudaFree({name})")
        if self._stream is not None:
            stream, self._stream = self._stream, None
            check(self._runtime.cudaStreamDestroy(stream), "cudaStreamDestroy")

    def __enter__(self) -> "DeviceArena":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
