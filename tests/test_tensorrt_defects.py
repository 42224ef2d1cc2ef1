"""The TensorRT and CUDA code paths that need a GPU, run on the CPU against fake ``tensorrt`` and cuda-python modules.

No TensorRT or GPU is needed: ``tensorrt`` and ``cuda.bindings.runtime``/``cuda.bindings.utils``
are replaced in ``sys.modules`` by small fakes that behave as the real bindings do where it
matters here: TensorRT's Python binding swallows an exception raised in an output allocator
callback and the run fails instead; ``trt.Runtime`` raises TypeError when TensorRT cannot start;
cuda-python calls return ``(cudaError_t, *values)``.  "Device" and pinned memory are host
memory, so copies really move bytes.
"""

from __future__ import annotations

import argparse
import ctypes
import enum
import re
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from minescan.engine import cuda_runtime
from minescan.engine.backends import ENGINE_SUFFIXES, TensorRTUnavailableError, is_engine_file, plan_backend
from minescan.engine.cuda_runtime import CudaError
from minescan.engine.engine_sidecar import BuildTarget, EngineSidecar, Profile, read_sidecar, sha256_file, sidecar_path
from minescan.export.build_profile import check_engine_path
from minescan.export.errors import ExportError
from minescan.model.contract import INPUT_NAME, OUTPUT_NAMES

SUCCESS, INVALID_VALUE, OUT_OF_MEMORY, INSUFFICIENT_DRIVER = 0, 1, 2, 35
_ERROR_NAMES = {
    INVALID_VALUE: b"cudaErrorInvalidValue",
    OUT_OF_MEMORY: b"cudaErrorMemoryAllocation",
    INSUFFICIENT_DRIVER: b"cudaErrorInsufficientDriver",
}


# --- a fake cuda-python ----------------------------------------------------------------------------


class FakeStream:
    """A ``cudaStream_t``: its native handle only through ``get_cuda_native_handle``; ``int()`` is deprecated."""

    def __init__(self, handle: int):
        self.handle = handle

    def __int__(self) -> int:
        raise AssertionError("int(cudaStream_t) is deprecated in cuda-bindings 13: use get_cuda_native_handle")

    def getPtr(self) -> int:
        raise AssertionError("getPtr() is the address of the handle, not the handle")


@dataclass
class FakeCudaRuntime:
    """``cuda.bindings.runtime`` with memory from ctypes; ``fail`` maps a call name to the error it returns."""

    driver_version: int = 13000
    fail: dict[str, int] = field(default_factory=dict)
    malloc_limit: int = 1 << 30
    calls: list[tuple] = field(default_factory=list)
    device: dict[int, ctypes.Array] = field(default_factory=dict)
    pinned: dict[int, ctypes.Array] = field(default_factory=dict)
    streams: set[int] = field(default_factory=set)
    cudaStreamNonBlocking = 1
    cudaMemcpyKind = types.SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)

    def _call(self, name: str, *args) -> int:
        self.calls.append((name, *args))
        return self.fail.get(name, SUCCESS)

    def cudaGetErrorName(self, error):
        return (SUCCESS, _ERROR_NAMES.get(int(error), b"cudaErrorUnknown"))

    def cudaGetDeviceCount(self):
        return (self._call("cudaGetDeviceCount"), 1)

    def cudaDriverGetVersion(self):
        return (self._call("cudaDriverGetVersion"), self.driver_version)

    def cudaGetDeviceProperties(self, device):
        props = types.SimpleNamespace(name=b"Fake GPU\x00\x00", major=9, minor=0, totalGlobalMem=80 << 30)
        return (self._call("cudaGetDeviceProperties", device), props)

    def cudaSetDevice(self, device):
        return (self._call("cudaSetDevice", device),)

    def cudaStreamCreateWithFlags(self, flags):
        error = self._call("cudaStreamCreateWithFlags", flags)
        self.streams.add(0x5EA)
        return (error, FakeStream(0x5EA))

    def cudaStreamSynchronize(self, stream):
        assert isinstance(stream, FakeStream)
        return (self._call("cudaStreamSynchronize"),)

    def cudaStreamDestroy(self, stream):
        self.streams.discard(stream.handle)
        return (self._call("cudaStreamDestroy"),)

    def _alloc(self, pool: dict, name: str, size: int):
        error = self._call(name, size)
        if error or size > self.malloc_limit:
            return (error or OUT_OF_MEMORY, 0)
        buffer = ctypes.create_string_buffer(size)
        pool[ctypes.addressof(buffer)] = buffer
        return (SUCCESS, ctypes.addressof(buffer))

    def _free(self, pool: dict, name: str, address: int):
        error = self._call(name, address)
        if address not in pool:
            return (INVALID_VALUE,)
        if not error:
            del pool[address]
        return (error,)

    def cudaMalloc(self, size):
        return self._alloc(self.device, "cudaMalloc", size)

    def cudaFree(self, address):
        return self._free(self.device, "cudaFree", address)

    def cudaMallocHost(self, size):
        return self._alloc(self.pinned, "cudaMallocHost", size)

    def cudaFreeHost(self, address):
        return self._free(self.pinned, "cudaFreeHost", address)

    def _inside(self, pool: dict, address: int, count: int) -> bool:
        return any(start <= address and address + count <= start + len(buf) for start, buf in pool.items())

    def cudaMemcpyAsync(self, dst, src, count, kind, stream):
        assert isinstance(stream, FakeStream), "copies go on the arena's stream"
        host, device = (src, dst) if kind == 1 else (dst, src)
        assert self._inside(self.pinned, host, count), "host side of a copy must be pinned memory"
        assert self._inside(self.device, device, count), "device side of a copy must be device memory"
        error = self._call("cudaMemcpyAsync", kind, count)
        if not error:
            ctypes.memmove(dst, src, count)
        return (error,)

    def named(self, name: str) -> list[tuple]:
        return [c for c in self.calls if c[0] == name]


@pytest.fixture
def fake_cuda(monkeypatch) -> FakeCudaRuntime:
    """A fake cuda-python in ``sys.modules``, loaded afresh by :mod:`minescan.engine.cuda_runtime`."""
    runtime = FakeCudaRuntime()
    utils = types.ModuleType("cuda.bindings.utils")
    handles: list[object] = []

    def get_cuda_native_handle(obj):
        handles.append(obj)
        return obj.handle

    utils.get_cuda_native_handle = get_cuda_native_handle
    runtime.handles = handles
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", runtime)
    monkeypatch.setitem(sys.modules, "cuda.bindings.utils", utils)
    monkeypatch.setattr(cuda_runtime, "_loaded", None)
    return runtime


def test_the_stream_handle_comes_from_the_native_accessor_not_int(fake_cuda):
    with cuda_runtime.DeviceArena() as arena:
        assert arena.stream == 0x5EA
    assert len(fake_cuda.handles) == 1 and isinstance(fake_cuda.handles[0], FakeStream)
    assert fake_cuda.streams == set()


def test_uploads_and_downloads_go_through_pinned_memory_owned_by_the_arena(fake_cuda):
    arena = cuda_runtime.DeviceArena()
    tiles = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    address = arena.upload(INPUT_NAME, tiles)
    assert address in fake_cuda.device and fake_cuda.named("cudaMallocHost") == [("cudaMallocHost", tiles.nbytes)]
    boxes = np.linspace(0, 1, 2 * 5 * 4, dtype=np.float32).reshape(2, 5, 4)
    box_address = arena.reserve("detection_boxes", boxes.nbytes)
    ctypes.memmove(box_address, boxes.ctypes.data, boxes.nbytes)  # what TensorRT would write
    back_tiles, back_boxes = arena.download(
        [(INPUT_NAME, tiles.shape, np.dtype(np.uint8)), ("detection_boxes", (2, 5, 4), np.dtype(np.float32))]
    )
    np.testing.assert_array_equal(back_tiles, tiles)
    np.testing.assert_array_equal(back_boxes, boxes)
    assert back_boxes.flags.owndata and back_tiles.flags.owndata  # copies, not views of pinned memory the arena frees
    assert [c[1] for c in fake_cuda.named("cudaMemcpyAsync")] == [1, 2, 2]
    assert fake_cuda.named("cudaStreamSynchronize"), "downloads wait for their copies"
    arena.close()
    assert fake_cuda.pinned == {} and fake_cuda.device == {} and fake_cuda.streams == set()
    assert len(fake_cuda.named("cudaFreeHost")) == 2 and len(fake_cuda.named("cudaFree")) == 2


def test_a_pinned_buffer_grows_and_frees_the_smaller_one(fake_cuda):
    with cuda_runtime.DeviceArena() as arena:
        arena.upload(INPUT_NAME, np.zeros(8, np.uint8))
        arena.upload(INPUT_NAME, np.zeros(4, np.uint8))  # fits: no new allocation
        arena.upload(INPUT_NAME, np.zeros(64, np.uint8))
        assert [c[1] for c in fake_cuda.named("cudaMallocHost")] == [8, 64]
        assert len(fake_cuda.named("cudaFreeHost")) == 1 and len(fake_cuda.pinned) == 1
    assert fake_cuda.pinned == {}


@pytest.mark.parametrize(
    "call, message",
    [
        ("cudaMallocHost", r"cudaMallocHost\(input_tensor, 48 bytes\) failed: cudaErrorMemoryAllocation"),
        ("cudaMalloc", r"cudaMalloc\(input_tensor, 48 bytes\) failed: cudaErrorMemoryAllocation"),
        ("cudaMemcpyAsync", r"copy input_tensor to the GPU failed: cudaErrorMemoryAllocation"),
    ],
)
def test_every_cuda_call_is_checked(fake_cuda, call, message):
    with cuda_runtime.DeviceArena() as arena:
        fake_cuda.fail[call] = OUT_OF_MEMORY
        with pytest.raises(CudaError, match=message) as caught:
            arena.upload(INPUT_NAME, np.zeros((1, 4, 4, 3), np.uint8))
        assert "\n" not in str(caught.value)
        fake_cuda.fail.clear()


def test_close_frees_everything_it_can_and_raises_the_first_failure(fake_cuda):
    arena = cuda_runtime.DeviceArena()
    arena.upload(INPUT_NAME, np.zeros(16, np.uint8))
    arena.reserve("detection_boxes", 64)
    fake_cuda.fail["cudaFree"] = INVALID_VALUE
    with pytest.raises(CudaError, match=r"cudaFree\(input_tensor\) failed: cudaErrorInvalidValue"):
        arena.close()
    assert fake_cuda.pinned == {} and fake_cuda.streams == set() and len(fake_cuda.named("cudaFree")) == 2
    arena.close()  # closed: nothing left to free, no second error


def test_the_driver_cuda_version(fake_cuda):
    fake_cuda.driver_version = 12040
    assert cuda_runtime.driver_cuda_version() == (12, 4)
    fake_cuda.driver_version = 0
    assert cuda_runtime.driver_cuda_version() is None


# --- a fake TensorRT -----------------------------------------------------------------------------

_TRT_MODULES = ("minescan.engine.tensorrt_common", "minescan.engine.tensorrt_backend", "minescan.export.build")


class DataType(enum.Enum):
    FLOAT = "float"
    HALF = "half"
    INT8 = "int8"
    INT32 = "int32"
    INT64 = "int64"
    UINT8 = "uint8"
    BOOL = "bool"


class TensorIOMode(enum.Enum):
    INPUT = 1
    OUTPUT = 2


class IOutputAllocator:
    def __init__(self) -> None:
        pass


def make_fake_trt() -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.13.0.35"
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level=2: None})
    trt.DataType = DataType
    trt.TensorIOMode = TensorIOMode
    trt.IOutputAllocator = IOutputAllocator
    trt.Dims = tuple
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace")
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace()
    trt.Builder = lambda logger: FakeBuilder()
    trt.Runtime = lambda logger: pytest.fail("the test sets trt.Runtime")
    trt.OnnxParser = FakeParser
    return trt


@pytest.fixture
def fake_trt(monkeypatch, fake_cuda):
    """A fake ``tensorrt`` in ``sys.modules``; minescan's TensorRT modules import afresh and are dropped afterwards."""
    saved = {name: sys.modules.pop(name) for name in _TRT_MODULES if name in sys.modules}
    trt = make_fake_trt()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    yield trt
    for name in _TRT_MODULES:
        sys.modules.pop(name, None)
        parent, _, child = name.rpartition(".")
        if name in saved:
            sys.modules[name] = saved[name]
            setattr(sys.modules[parent], child, saved[name])
        elif hasattr(sys.modules[parent], child):
            delattr(sys.modules[parent], child)


class FakeContext:
    """An execution context that, like TensorRT's binding, swallows what the output allocator raises."""

    def __init__(self, batch: int, detections: int, grow: int | None = None, bad_shape: bool = False):
        self.batch, self.detections, self.grow, self.bad_shape = batch, detections, grow, bad_shape
        self.allocator = None
        self.addresses: dict[str, int] = {}
        self.streams: list[int] = []

    def set_output_allocator(self, name, allocator):
        self.allocator = allocator
        return True

    def set_input_shape(self, name, shape):
        return True

    def set_tensor_address(self, name, address):
        self.addresses[name] = address
        return True

    def get_tensor_shape(self, name):
        return (-1,) if name == "num_detections" else (-1, -1, 4) if name == "detection_boxes" else (-1, -1)

    def get_max_output_size(self, name):
        return 64

    def execute_async_v3(self, stream_handle):
        self.streams.append(stream_handle)
        n, k = self.batch, self.detections
        shapes = {"detection_boxes": (n, k, 4), "detection_scores": (n, k), "detection_classes": (n, k), "num_detections": (n,)}
        for name, shape in shapes.items():
            size = int(np.prod(shape)) * 4 if self.grow is None else self.grow
            try:  # what TensorRT's PyOutputAllocator does: print the exception, carry on with a null pointer
                address = self.allocator.reallocate_output_async(name, self.addresses[name], size, 256, stream_handle)
            except Exception as exc:  # noqa: BLE001
                print(f"[ERROR] Exception caught in reallocateOutputAsync(): {exc}", file=sys.stderr)
                address = 0
            if not address:
                return False
            try:  # ... and for notifyShape: print it, carry on as if nothing happened
                self.allocator.notify_shape(name, object() if self.bad_shape else shape)
            except Exception as exc:  # noqa: BLE001
                print(f"[ERROR] Exception caught in notifyShape(): {exc}", file=sys.stderr)
            values = np.full(shape, 0.5 if name != "num_detections" else k, np.float32)
            ctypes.memmove(address, values.ctypes.data, values.nbytes)
            self.addresses[name] = address
        return True


def _detector(context: FakeContext, path: Path):
    """A TensorRTDetector around ``context`` and a real DeviceArena (on the fake CUDA), past its engine loading."""
    from minescan.engine.cuda_runtime import DeviceArena
    from minescan.engine.tensorrt_backend import TensorRTDetector, _OutputBuffers

    detector = TensorRTDetector.__new__(TensorRTDetector)
    detector.path = path
    detector._context = context
    detector._arena = DeviceArena()
    detector._allocator = _OutputBuffers(detector._arena)
    detector._outputs = list(OUTPUT_NAMES)
    detector._dtypes = {name: np.dtype(np.float32) for name in OUTPUT_NAMES}
    detector._min_batch, detector._max_batch = 1, 4
    for name in OUTPUT_NAMES:
        context.set_output_allocator(name, detector._allocator)
    return detector


def test_a_batch_runs_through_the_allocator_and_pinned_copies(fake_trt, fake_cuda, tmp_path):
    detector = _detector(FakeContext(batch=2, detections=3), tmp_path / "m.engine")
    boxes, scores, classes, counts = detector._run(np.zeros((2, 8, 8, 3), np.uint8))
    assert boxes.shape == (2, 3, 4) and scores.shape == classes.shape == (2, 3) and counts.tolist() == [3, 3]
    assert detector._context.streams == [0x5EA]
    detector.close()
    assert fake_cuda.device == {} and fake_cuda.pinned == {}


def test_an_exception_in_the_output_allocator_is_raised_not_swallowed(fake_trt, fake_cuda, tmp_path):
    fake_cuda.malloc_limit = 1 << 20
    detector = _detector(FakeContext(batch=1, detections=3, grow=1 << 24), tmp_path / "m.engine")
    with pytest.raises(CudaError, match=r"cudaMalloc\(detection_boxes, 16777216 bytes\) failed: cudaErrorMemoryAllocation"):
        detector._run(np.zeros((1, 8, 8, 3), np.uint8))
    assert detector._allocator.error is None  # raised once, then forgotten


def test_a_bug_in_the_output_allocator_keeps_its_own_exception_even_when_the_run_succeeds(fake_trt, tmp_path):
    detector = _detector(FakeContext(batch=1, detections=3, bad_shape=True), tmp_path / "m.engine")
    with pytest.raises(TypeError, match="has no len"):  # notify_shape got a shape it cannot read
        detector._run(np.zeros((1, 8, 8, 3), np.uint8))


def _engine_with_sidecar(tmp_path: Path, suffix: str = ".engine") -> Path:
    path = tmp_path / f"m{suffix}"
    path.write_bytes(b"stand-in engine")
    target = BuildTarget(tensorrt_version="10.13.0.35", gpu_name="Fake GPU", compute_capability="9.0")
    profile = Profile(INPUT_NAME, (1, 8, 8, 3), (1, 8, 8, 3), (1, 8, 8, 3))
    sidecar_path(path).write_text(EngineSidecar(sha256_file(path), target, "0" * 64, profile, {}).to_json())
    return path


@pytest.mark.parametrize("failure", ["raises", "returns None"])
def test_a_runtime_tensorrt_cannot_create_names_the_driver_and_the_wheels_cuda(fake_trt, fake_cuda, monkeypatch, tmp_path, failure):
    def runtime(logger):
        if failure == "raises":  # what pybind11 says when createInferRuntime returns null
            raise TypeError("pybind11::init(): factory function returned nullptr")

    fake_trt.Runtime = runtime
    fake_cuda.driver_version = 12040
    from minescan.engine import tensorrt_common
    from minescan.engine.tensorrt_backend import TensorRTDetector

    monkeypatch.setattr(tensorrt_common, "wheel_cuda_major", lambda: "13")
    with pytest.raises(TensorRTUnavailableError) as caught:
        TensorRTDetector(_engine_with_sidecar(tmp_path))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("TensorRT 10.13.0.35 could not create its runtime")
    assert "built for CUDA 13 and this machine's NVIDIA driver supports CUDA 12.4" in message
    assert ("factory function returned nullptr" in message) == (failure == "raises")


def test_the_wheels_cuda_major_comes_from_the_installed_package_names(fake_trt, monkeypatch):
    from minescan.engine import tensorrt_common

    installed = {"tensorrt-cu13-bindings": "11.4.0.106"}

    def version(name):
        if name not in installed:
            raise tensorrt_common.metadata.PackageNotFoundError(name)
        return installed[name]

    monkeypatch.setattr(tensorrt_common.metadata, "version", version)
    assert tensorrt_common.wheel_cuda_major() == "13"
    installed.clear()
    assert tensorrt_common.wheel_cuda_major() is None


# --- minescan build against the fake TensorRT ------------------------------------------------------


@dataclass
class FakeTensor:
    name: str
    dtype: DataType
    shape: tuple[int, ...]


class FakeNetwork:
    inputs = [FakeTensor(INPUT_NAME, DataType.UINT8, (-1, -1, -1, 3))]
    outputs = [
        FakeTensor("detection_boxes", DataType.FLOAT, (-1, -1, 4)),
        FakeTensor("detection_scores", DataType.FLOAT, (-1, -1)),
        FakeTensor("detection_classes", DataType.FLOAT, (-1, -1)),
        FakeTensor("num_detections", DataType.FLOAT, (-1,)),
    ]
    num_inputs, num_outputs = 1, 4

    def get_input(self, i):
        return self.inputs[i]

    def get_output(self, i):
        return self.outputs[i]


class FakeParser:
    num_errors = 0

    def __init__(self, network, logger):
        pass

    def parse_from_file(self, path):
        return True


class FakeTimingCache:
    def __init__(self, data: bytes):
        self.data = data

    def serialize(self):
        return self.data


class FakeConfig:
    """IBuilderConfig: a timing cache of other bytes than ``b"cache:..."`` is unreadable, as TensorRT's binding has it."""

    profile_index = 0
    cache_raises = False

    def set_memory_pool_limit(self, pool, size):
        pass

    def add_optimization_profile(self, profile):
        return self.profile_index

    def create_timing_cache(self, serialized):
        data = bytes(serialized)
        if self.cache_raises:
            raise RuntimeError("Failed to deserialize the timing cache")
        return FakeTimingCache(data) if not data or data.startswith(b"cache:") else None

    def set_timing_cache(self, cache, ignore_mismatch):
        if not isinstance(cache, FakeTimingCache):  # pybind11 on None for an ITimingCache
            raise TypeError("set_timing_cache(): incompatible function arguments.")
        return True

    def get_timing_cache(self):
        return FakeTimingCache(b"cache:new")


class FakeBuilder:
    config = FakeConfig()

    def create_network(self, flags):
        return FakeNetwork()

    def create_builder_config(self):
        return self.config

    def create_optimization_profile(self):
        return types.SimpleNamespace(set_shape=lambda *shapes: None)

    def build_serialized_network(self, network, config):
        return b"serialized engine"


@pytest.fixture
def builder(fake_trt):
    made = FakeBuilder()
    made.config = FakeConfig()
    fake_trt.Builder = lambda logger: made
    return made


def test_a_build_writes_the_engine_sidecar_and_cache(builder, square_model, tmp_path):
    from minescan.export.build import build_engine

    report = build_engine(square_model, tmp_path / "m.trt", batch=(1, 2, 4), size=(96, 96), timing_cache=tmp_path / "cache")
    assert (tmp_path / "m.trt").read_bytes() == b"serialized engine" and (tmp_path / "cache").read_bytes() == b"cache:new"
    assert read_sidecar(tmp_path / "m.trt").profile.max == (4, 96, 96, 3) and report.sidecar.target.gpu_name == "Fake GPU"


@pytest.mark.parametrize("raises", [False, True])
def test_a_corrupt_timing_cache_is_an_export_error_naming_the_file(builder, square_model, tmp_path, raises):
    from minescan.export.build import build_engine

    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"\x00garbage")
    builder.config.cache_raises = raises
    with pytest.raises(ExportError, match=f"timing cache {re.escape(str(cache))}: TensorRT cannot read it.*delete it") as caught:
        build_engine(square_model, tmp_path / "m.engine", batch=(1, 2, 4), size=(96, 96), timing_cache=cache)
    assert "\n" not in str(caught.value) and not (tmp_path / "m.engine").exists()


def test_a_refused_optimization_profile_is_an_export_error(builder, square_model, tmp_path):
    from minescan.export.build import build_engine

    builder.config.profile_index = -1
    refused = r"TensorRT refused the optimization profile of input_tensor \(min \[1, 96, 96, 3\], opt \[2, 96, 96, 3\], max \[4, 96, 96, 3\]"
    with pytest.raises(ExportError, match=refused):
        build_engine(square_model, tmp_path / "m.engine", batch=(1, 2, 4), size=(96, 96))
    assert not (tmp_path / "m.engine").exists()


def test_a_builder_tensorrt_cannot_create_is_one_clear_line(fake_trt, fake_cuda, square_model, tmp_path):
    from minescan.export.build import build_engine

    def nullptr(logger):
        raise TypeError("pybind11::init(): factory function returned nullptr")

    fake_trt.Builder = nullptr
    with pytest.raises(TensorRTUnavailableError, match="could not create its builder .*driver supports CUDA 13.0") as caught:
        build_engine(square_model, tmp_path / "m.engine", size=(96, 96))
    assert "\n" not in str(caught.value)


# --- .trt engines ------------------------------------------------------------------------------------


def test_trt_is_an_engine_suffix_everywhere(tmp_path):
    assert ".trt" in ENGINE_SUFFIXES and is_engine_file("model.trt") and is_engine_file("MODEL.TRT")
    assert plan_backend("model.trt", "auto", ["CPUExecutionProvider"]).engine
    assert check_engine_path("out/model.trt") == Path("out/model.trt")
    engine = _engine_with_sidecar(tmp_path, ".trt")
    assert sidecar_path(engine).name == "m.trt.json" and read_sidecar(engine).profile.input == INPUT_NAME


def test_an_engine_not_named_as_one_is_refused_before_tensorrt_loads(square_model, tmp_path):
    from minescan.cli.build import add_build_parser

    named = r"engine file .*m\.bin: name it with \.engine, \.plan, \.trt so that minescan loads it"
    with pytest.raises(ExportError, match=named) as caught:
        check_engine_path(tmp_path / "m.bin")
    assert "\n" not in str(caught.value)
    parser = argparse.ArgumentParser()
    add_build_parser(parser.add_subparsers())
    args = parser.parse_args(["build", str(square_model), "--out", str(tmp_path / "m.onnx")])
    with pytest.raises(ExportError, match="name it with"):  # not "TensorRT is not available": checked first
        args.handler(args)
