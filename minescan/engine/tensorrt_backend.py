"""The TensorRT backend: a serialized engine from ``minescan build`` on a CUDA GPU.

Loading checks, in order: the sidecar ``<engine>.json`` exists and vouches
for this very file, for this TensorRT version and for this GPU model
(:mod:`minescan.engine.engine_sidecar`); the engine deserializes; its I/O
tensors meet the OD API contract.  Labels and the preprocessing recipe come
from the ONNX metadata that the sidecar carries.

Running uses TensorRT 10's name-based I/O: per batch, ``set_input_shape`` on
``input_tensor``, an address for every I/O tensor (``set_tensor_address``),
``execute_async_v3`` on the arena's stream, then copies back (in and out
through the arena's pinned host buffers, :mod:`minescan.engine.cuda_runtime`).  Output sizes
come from ``get_tensor_shape`` once the input shape is set; a dimension that
depends on the data (-1, e.g. a K left symbolic by tf2onnx) gets a buffer of
``get_max_output_size`` bytes, and an output allocator grows buffers on
TensorRT's request and records the shapes it reports.  TensorRT's Python
binding swallows an exception raised inside the allocator (it prints it and
hands TensorRT a null buffer, which then fails with a generic error), so the
allocator keeps the first one and the batch re-raises it.

The batch a call may take is the profile's range: batches larger than its
max are split (:func:`~minescan.engine.detector.split_batch`), smaller than
its min padded with blank tiles whose results are dropped.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from minescan.model.contract import INPUT_NAME, OUTPUT_NAMES, ContractError, ModelSignature, TensorSpec, check_contract
from minescan.engine.cuda_runtime import DeviceArena, gpu_info
from minescan.model.detections import TileDetections, from_normalized
from minescan.engine.detector import DetectorInputError, check_tiles, split_batch
from minescan.engine.engine_sidecar import EngineMismatchError, check_engine, read_sidecar
from minescan.model.metadata import MetadataError, check_input_size, parse_metadata
from minescan.engine.onnxruntime_backend import ModelLoadError
from minescan.engine.tensorrt_common import build_target, create_runtime, dims, numpy_dtype, tensor_spec, trt
from minescan.errors import MinescanError


class TensorRTRunError(MinescanError):
    """TensorRT refused a batch or failed while running it."""


class _OutputBuffers(trt.IOutputAllocator):
    """Hands TensorRT the arena's output buffers, grown on request, and keeps the shapes it reports."""

    def __init__(self, arena: DeviceArena):
        trt.IOutputAllocator.__init__(self)
        self._arena = arena
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.error: BaseException | None = None
        """The first exception raised in a callback since :meth:`reset`: TensorRT's binding would swallow it."""

    def reset(self) -> None:
        """Forget the shapes and the error of the last batch."""
        self.shapes.clear()
        self.error = None

    def _keep(self, exc: Exception) -> None:
        if self.error is None:
            self.error = exc

    def reallocate_output(self, tensor_name: str, memory: int, size: int, alignment: int) -> int:
        try:
            return self._arena.reserve(tensor_name, size)
        except Exception as exc:  # TensorRT's binding would print it and go on with a null buffer
            self._keep(exc)
            return 0

    def reallocate_output_async(self, tensor_name: str, memory: int, size: int, alignment: int, stream: int) -> int:
        return self.reallocate_output(tensor_name, memory, size, alignment)

    def notify_shape(self, tensor_name: str, shape: trt.Dims) -> None:
        try:
            self.shapes[tensor_name] = dims(shape)
        except Exception as exc:
            self._keep(exc)


def _pin_to_profile(signature: ModelSignature, low: tuple[int, ...], high: tuple[int, ...]) -> ModelSignature:
    """The signature with each run-time dimension that the profile pins (min == max) counted as fixed."""

    def pin(dim: int | None, axis: int) -> int | None:
        return low[axis] if dim is None and low[axis] == high[axis] else dim

    return replace(
        signature, batch=pin(signature.batch, 0), height=pin(signature.height, 1), width=pin(signature.width, 2)
    )


class TensorRTDetector:
    """A contract-checked TensorRT engine on the first CUDA GPU."""

    backend = "tensorrt"
    notice: str | None = None
    concurrency = 1  # one execution context and stream

    def __init__(self, path: str | os.PathLike[str], *, max_batch: int | None = None):
        path = Path(path)
        if not path.is_file():
            raise ModelLoadError(f"engine not found: {path}")
        sidecar = read_sidecar(path)
        check_engine(path, sidecar, build_target(gpu_info()))
        self.path = path
        self._runtime = create_runtime()
        engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise EngineMismatchError(f"{path}: TensorRT could not deserialize the engine (see its log above); rebuild with minescan build")
        self._engine = engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        signature = check_contract(str(path), [self._spec(n) for n in inputs], [self._spec(n) for n in self._outputs])
        low, _, high = (dims(s) for s in engine.get_tensor_profile_shape(INPUT_NAME, 0))
        self.signature = _pin_to_profile(signature, low, high)
        try:
            self.metadata = parse_metadata(sidecar.metadata)
            # Against the graph's own fixed dims, not the profile: a build's size option may differ from the metadata.
            check_input_size(self.metadata, signature, "the engine's input")
        except MetadataError as exc:
            raise MetadataError(f"{path}: {exc}") from None
        self._min_batch = low[0]
        self._max_batch = min(high[0], max_batch) if max_batch else high[0]
        self._dtypes = {n: numpy_dtype(engine.get_tensor_dtype(n), n) for n in self._outputs}
        self._context = engine.create_execution_context()
        self._arena = DeviceArena()
        self._allocator = _OutputBuffers(self._arena)
        for name in self._outputs:
            if not self._context.set_output_allocator(name, self._allocator):
                raise TensorRTRunError(f"{path}: TensorRT refused an output allocator for {name!r}")

    def _spec(self, name: str) -> TensorSpec:
        return tensor_spec(name, self._engine.get_tensor_dtype(name), dims(self._engine.get_tensor_shape(name)))

    def detect(self, tiles: np.ndarray, score_threshold: float = 0.0) -> list[TileDetections]:
        """Detections for each tile of a uint8 [B, H, W, 3] batch, split to the engine's profile."""
        check_tiles(tiles, self.signature)
        height, width = tiles.shape[1:3]
        results: list[TileDetections] = []
        for chunk in split_batch(tiles, self._max_batch):
            boxes, scores, classes, counts = self._run(chunk)
            for i in range(len(chunk)):
                results.append(from_normalized(boxes[i], scores[i], classes[i], counts[i], height, width, score_threshold))
        return results

    def _run(self, chunk: np.ndarray) -> list[np.ndarray]:
        """The four contract outputs for one chunk no larger than the profile's max batch."""
        batch = chunk
        if len(chunk) < self._min_batch:
            blank = np.zeros((self._min_batch - len(chunk), *chunk.shape[1:]), np.uint8)
            batch = np.concatenate([chunk, blank])
        context = self._context
        if not context.set_input_shape(INPUT_NAME, batch.shape):
            raise DetectorInputError(f"{self.path}: the engine's profile does not take a batch of shape {list(batch.shape)}")
        self._bind(INPUT_NAME, self._arena.upload(INPUT_NAME, batch))
        expected: dict[str, tuple[int, ...]] = {}
        for name in self._outputs:
            expected[name] = dims(context.get_tensor_shape(name))
            size = (
                int(np.prod(expected[name])) * self._dtypes[name].itemsize
                if min(expected[name], default=0) >= 0
                else context.get_max_output_size(name)
            )
            self._bind(name, self._arena.reserve(name, size))
        self._allocator.reset()
        ran = context.execute_async_v3(self._arena.stream)
        self._raise_allocator_error()
        if not ran:
            raise TensorRTRunError(f"{self.path}: TensorRT failed to run a batch of {len(batch)} (see its log above)")
        self._arena.synchronize()
        self._raise_allocator_error()  # the callbacks may also run as the stream completes
        requests = []
        for name in OUTPUT_NAMES:
            shape = self._allocator.shapes.get(name, expected[name])
            if min(shape, default=0) < 0:
                raise TensorRTRunError(f"{self.path}: TensorRT reported no shape for output {name!r} ({list(shape)})")
            requests.append((name, shape, self._dtypes[name]))
        outputs = self._arena.download(requests)
        if outputs[0].shape[0] != len(batch):
            raise ContractError(f"{self.path}: detection_boxes came back {list(outputs[0].shape)} for a batch of {len(batch)}")
        return outputs

    def _raise_allocator_error(self) -> None:
        """Re-raise, with its own traceback, the exception the output allocator kept from TensorRT's binding."""
        error, self._allocator.error = self._allocator.error, None
        if error is not None:
            raise error

    def _bind(self, name: str, address: int) -> None:
        if not self._context.set_tensor_address(name, address):
            raise TensorRTRunError(f"{self.path}: TensorRT refused the device address of {name!r}")

    def close(self) -> None:
        """Free the GPU buffers and stream."""
        self._arena.close()
