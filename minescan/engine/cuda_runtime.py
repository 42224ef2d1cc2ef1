"""The CUDA runtime calls minescan makes, through cuda-python, in one place.

TensorRT runs on device memory and a CUDA stream that the caller provides.
This module owns both, in the manner of NVIDIA's ``common_runtime.py``: a
:class:`DeviceArena` holds one stream, named device buffers that grow on
demand and, for each, a page-locked (pinned) host staging buffer; it copies
host arrays in and out through the pinned buffers on that stream, and frees
everything on :meth:`DeviceArena.close`.  Pinned memory lets the copies run
asynchronously at full bus speed; pageable numpy memory would make CUDA stage
every copy through a bounce buffer of its own.  Every CUDA call goes through
:func:`check` or :func:`check_ok`, which turn a failed ``cudaError_t`` into a
:class:`CudaError` naming the call and the error.

cuda-python is imported on first use, by module name: ``cuda.bindings.runtime``
(cuda-python 12.6+ and 13) or the older ``cuda.cudart`` (which 13.0 removed).
Stream handles are read with ``cuda.bindings.utils.get_cuda_native_handle``
(cuda-bindings 12.9.1+ and 13), not ``int(stream)``, which cuda-bindings
deprecated; ``stream.getPtr()`` would be wrong: it is the address *of* the
handle.  Without cuda-python, or without a usable GPU and driver, the first
call raises :class:`CudaUnavailableError` with the reason.

cuda-python ships no type information, so mypy sees its calls as ``Any``; the
:class:`_Runtime` protocol below declares the part minescan uses, and this
module's own surface is fully typed.  It is checked against cuda-python
only by the tests with a fake runtime and, on a GPU machine, the real one.
"""

from __future__ import annotations

import ctypes
import importlib
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence, SupportsInt, TypeVar, cast

import numpy as np
import numpy.typing as npt

from minescan.errors import MinescanError

_T = TypeVar("_T")


class CudaUnavailableError(MinescanError):
    """cuda-python, a CUDA driver or a GPU is missing."""


class CudaError(MinescanError):
    """A CUDA runtime call failed."""


class _DeviceProperties(Protocol):
    name: bytes | str
    major: int
    minor: int
    totalGlobalMem: int


class _MemcpyKind(Protocol):
    cudaMemcpyHostToDevice: SupportsInt
    cudaMemcpyDeviceToHost: SupportsInt


class _Runtime(Protocol):
    """The part of ``cuda.bindings.runtime`` minescan calls: each returns ``(cudaError_t, *values)``."""

    cudaStreamNonBlocking: int
    cudaMemcpyKind: _MemcpyKind

    def cudaGetErrorName(self, error: SupportsInt) -> tuple[SupportsInt, bytes]: ...
    def cudaGetDeviceCount(self) -> tuple[SupportsInt, int]: ...
    def cudaDriverGetVersion(self) -> tuple[SupportsInt, int]: ...
    def cudaGetDeviceProperties(self, device: int) -> tuple[SupportsInt, _DeviceProperties]: ...
    def cudaSetDevice(self, device: int) -> tuple[SupportsInt]: ...
    def cudaStreamCreateWithFlags(self, flags: int) -> tuple[SupportsInt, object]: ...
    def cudaStreamSynchronize(self, stream: object) -> tuple[SupportsInt]: ...
    def cudaStreamDestroy(self, stream: object) -> tuple[SupportsInt]: ...
    def cudaMalloc(self, size: int) -> tuple[SupportsInt, int]: ...
    def cudaFree(self, address: int) -> tuple[SupportsInt]: ...
    def cudaMallocHost(self, size: int) -> tuple[SupportsInt, int]: ...
    def cudaFreeHost(self, address: int) -> tuple[SupportsInt]: ...
    def cudaMemcpyAsync(
        self, dst: int, src: int, count: int, kind: SupportsInt, stream: object
    ) -> tuple[SupportsInt]: ...


@dataclass(frozen=True)
class _Cuda:
    runtime: _Runtime
    handle: Callable[[object], int]  # a cuda-python object -> its native handle (an address)


_loaded: _Cuda | None = None


def _load() -> _Cuda:
    """cuda-python's runtime bindings and handle accessor, imported once; raise when cuda-python is missing."""
    global _loaded
    if _loaded is None:
        try:
            module = importlib.import_module("cuda.bindings.runtime")
        except ImportError:  # cuda-python < 12.6, or none
            try:
                module = importlib.import_module("cuda.cudart")
            except ImportError:
                raise CudaUnavailableError("cuda-python is not installed (pip install 'minescan[gpu]' or 'cuda-python')") from None
        try:
            getter = importlib.import_module("cuda.bindings.utils").get_cuda_native_handle
        except (ImportError, AttributeError):  # cuda-bindings < 12.9.1: int() was the accessor then
            getter = int
        _loaded = _Cuda(cast(_Runtime, module), lambda obj: int(getter(obj)))
    return _loaded


def _error_name(error: SupportsInt) -> str:
    status, name = _load().runtime.cudaGetErrorName(error)
    return name.decode() if int(status) == 0 else f"cudaError {int(error)}"


def check(result: tuple[SupportsInt, _T], call: str) -> _T:
    """The value of a cuda-python call's ``(error, value)`` result; raise :class:`CudaError` naming ``call`` on failure."""
    error, value = result
    if int(error) != 0:
        raise CudaError(f"{call} failed: {_error_name(error)}")
    return value


def check_ok(result: tuple[SupportsInt], call: str) -> None:
    """Raise :class:`CudaError` naming ``call`` unless a cuda-python call's ``(error,)`` result is success."""
    (error,) = result
    if int(error) != 0:
        raise CudaError(f"{call} failed: {_error_name(error)}")


@dataclass(frozen=True)
class GpuInfo:
    """A CUDA device as engines are tied to it: name and compute capability ("8.9")."""

    index: int
    name: str
    compute_capability: str
    memory_bytes: int


def gpu_info(device: int = 0) -> GpuInfo:
    """Describe CUDA device ``device``; raise :class:`CudaUnavailableError` when there is none."""
    runtime = _load().runtime
    error, count = runtime.cudaGetDeviceCount()
    if int(error) != 0:
        raise CudaUnavailableError(f"no usable CUDA GPU: cudaGetDeviceCount says {_error_name(error)}")
    if not device < count:
        raise CudaUnavailableError(f"no CUDA device {device}: this machine has {count}")
    props = check(runtime.cudaGetDeviceProperties(device), f"cudaGetDeviceProperties({device})")
    name = props.name.decode(errors="replace").rstrip("\x00") if isinstance(props.name, bytes) else str(props.name)
    return GpuInfo(device, name, f"{props.major}.{props.minor}", int(props.totalGlobalMem))


def driver_cuda_version() -> tuple[int, int] | None:
    """The newest CUDA version the installed driver supports, as (major, minor); None without a driver."""
    version = check(_load().runtime.cudaDriverGetVersion(), "cudaDriverGetVersion")
    return (version // 1000, version % 1000 // 10) if version > 0 else None


def stream_handle(stream: object) -> int:
    """The native ``cudaStream_t`` of a cuda-python stream object, as TensorRT's ``execute_async_v3`` takes it."""
    return _load().handle(stream)


class DeviceArena:
    """One CUDA stream on one device, named device buffers and their pinned host staging buffers.

    :meth:`close` frees them all.  Host data passes through the pinned buffers: :meth:`upload` copies an
    array into one, :meth:`download` copies out of one into a new array, so no caller ever holds a view
    of memory the arena may free.
    """

    def __init__(self, device: int = 0):
        gpu_info(device)  # a clear error when there is no GPU, before any allocation
        self._runtime = _load().runtime
        check_ok(self._runtime.cudaSetDevice(device), f"cudaSetDevice({device})")
        self._stream: object | None = check(
            self._runtime.cudaStreamCreateWithFlags(self._runtime.cudaStreamNonBlocking), "cudaStreamCreateWithFlags"
        )
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device address, capacity in bytes)
        self._pinned: dict[str, tuple[int, int]] = {}  # name -> (pinned host address, capacity in bytes)
        self._queued = False  # copies from/to pinned buffers may be in flight until synchronize()

    def _live_stream(self) -> object:
        if self._stream is None:
            raise CudaError("the CUDA arena is closed")
        return self._stream

    @property
    def stream(self) -> int:
        """The stream's native handle, as TensorRT's ``execute_async_v3`` takes it."""
        return stream_handle(self._live_stream())

    def reserve(self, name: str, nbytes: int) -> int:
        """The address of device buffer ``name`` with room for ``nbytes`` (at least 1), reallocated only when it must grow."""
        nbytes = max(nbytes, 1)
        address, capacity = self._buffers.get(name, (0, 0))
        if nbytes <= capacity:
            return address
        if address:
            del self._buffers[name]
            check_ok(self._runtime.cudaFree(address), f"cudaFree({name})")
        address = int(check(self._runtime.cudaMalloc(nbytes), f"cudaMalloc({name}, {nbytes} bytes)"))
        self._buffers[name] = (address, nbytes)
        return address

    def address(self, name: str) -> int:
        """The current device address of buffer ``name``."""
        return self._buffers[name][0]

    def _staging(self, name: str, nbytes: int) -> npt.NDArray[np.uint8]:
        """The pinned host buffer of ``name`` with room for ``nbytes``, as a uint8 array over exactly ``nbytes``."""
        if self._queued:  # never rewrite or free pinned memory a queued copy still reads or writes
            self.synchronize()
        address, capacity = self._pinned.get(name, (0, 0))
        if max(nbytes, 1) > capacity:
            if address:
                del self._pinned[name]
                check_ok(self._runtime.cudaFreeHost(address), f"cudaFreeHost({name})")
            capacity = max(nbytes, 1)
            address = int(check(self._runtime.cudaMallocHost(capacity), f"cudaMallocHost({name}, {capacity} bytes)"))
            self._pinned[name] = (address, capacity)
        return np.ctypeslib.as_array((ctypes.c_uint8 * capacity).from_address(address))[:nbytes]

    def upload(self, name: str, array: np.ndarray) -> int:
        """Queue a copy of ``array`` into device buffer ``name`` (grown to fit), through pinned memory; return its address."""
        source = np.ascontiguousarray(array)
        staging = self._staging(name, source.nbytes)
        staging[: source.nbytes] = source.reshape(-1).view(np.uint8)
        address = self.reserve(name, source.nbytes)
        kind = self._runtime.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._queued = True
        check_ok(
            self._runtime.cudaMemcpyAsync(address, staging.ctypes.data, source.nbytes, kind, self._live_stream()),
            f"copy {name} to the GPU",
        )
        return address

    def download(self, outputs: Sequence[tuple[str, tuple[int, ...], np.dtype]]) -> list[np.ndarray]:
        """Copy device buffers ``(name, shape, dtype)`` back through pinned memory, wait for them, return new arrays."""
        views: list[tuple[npt.NDArray[np.uint8], tuple[int, ...], np.dtype]] = []
        kind = self._runtime.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name, shape, dtype in outputs:
            nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
            address, capacity = self._buffers[name]
            if nbytes > capacity:
                raise CudaError(f"output {name} is {nbytes} bytes but its device buffer holds {capacity}")
            staging = self._staging(name, nbytes)
            self._queued = True
            check_ok(
                self._runtime.cudaMemcpyAsync(staging.ctypes.data, address, nbytes, kind, self._live_stream()),
                f"copy {name} from the GPU",
            )
            views.append((staging, shape, np.dtype(dtype)))
        self.synchronize()
        return [staging.view(dtype).reshape(shape).copy() for staging, shape, dtype in views]

    def synchronize(self) -> None:
        """Wait for everything queued on the stream."""
        check_ok(self._runtime.cudaStreamSynchronize(self._live_stream()), "cudaStreamSynchronize")
        self._queued = False

    def close(self) -> None:
        """Wait for the stream, free every buffer and the stream; the arena is unusable afterwards.

        Every release is attempted; the first failure is raised after the rest.
        """
        if self._stream is None:
            return
        failures: list[CudaError] = []

        def attempt(result: tuple[SupportsInt], call: str) -> None:
            try:
                check_ok(result, call)
            except CudaError as exc:
                failures.append(exc)

        attempt(self._runtime.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        buffers, self._buffers = self._buffers, {}
        for name, (address, _) in buffers.items():
            attempt(self._runtime.cudaFree(address), f"cudaFree({name})")
        pinned, self._pinned = self._pinned, {}
        for name, (address, _) in pinned.items():
            attempt(self._runtime.cudaFreeHost(address), f"cudaFreeHost({name})")
        stream, self._stream = self._stream, None
        attempt(self._runtime.cudaStreamDestroy(stream), "cudaStreamDestroy")
        if failures:
            raise failures[0]

    def __enter__(self) -> "DeviceArena":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
