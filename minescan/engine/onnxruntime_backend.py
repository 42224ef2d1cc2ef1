"""The default backend: ONNX Runtime, on the CPU or (with onnxruntime-gpu) a GPU execution provider.

The session is created once per model with explicit thread settings and the
model is checked against the OD API contract before anything runs, its
``minescan.*`` metadata too (:class:`~minescan.model.metadata.MetadataError`
naming the file and the key: see :mod:`minescan.model.metadata`).

On the CPU a scan runs several ``detect`` calls at once (``concurrency``,
one per core by default, at most :data:`MAX_WORKERS`), each on its own
intra-op threads (cores / workers): tiles are independent, so running them
side by side keeps every core busy, where one call spread over all cores
waits at the end of each operator for the slowest thread.  Measured on 2
cores, batch 4 of 640 px tiles: the known-answer detector 17.8 ms/tile with
one 2-thread call, 12.6 ms/tile with two 1-thread calls; the demo Faster
R-CNN 29.6 vs 22.3 ms/tile.  ONNX Runtime sessions may be run from several
threads at once.  ``providers`` lists execution providers
in order of preference (:mod:`minescan.engine.backends` picks them); ONNX
Runtime places each node on the first that supports it, and ``backend`` names
the provider the session actually leads with.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import onnxruntime as ort

from minescan.defaults import DEFAULTS, available_cores
from minescan.model.contract import (
    INPUT_NAME, OUTPUT_NAMES, ContractError, TensorSpec, check_classifier, check_contract, model_task,
)
from minescan.model.detections import BatchDetections, TileDetections
from minescan.engine.detector import check_tiles, split_batch
from minescan.model.metadata import MetadataError, check_input_size, parse_metadata
from minescan.errors import MinescanError


class ModelLoadError(MinescanError):
    """A model file is missing or cannot be read."""


def _spec(arg: ort.NodeArg) -> TensorSpec:
    dtype = arg.type[len("tensor(") : -1] if arg.type.startswith("tensor(") else arg.type
    shape = tuple(d if isinstance(d, int) else None for d in (arg.shape or []))
    return TensorSpec(arg.name, dtype, shape)


MAX_WORKERS = DEFAULTS.max_workers  # concurrent calls on the CPU; more cores go to each call's intra-op threads


_BACKEND_NAMES = {
    "CPUExecutionProvider": "onnxruntime-cpu",
    "CUDAExecutionProvider": "onnxruntime-cuda",
    "TensorrtExecutionProvider": "onnxruntime-tensorrt",
}


class OnnxRuntimeDetector:
    """A contract-checked model on ONNX Runtime; ``backend`` is e.g. ``onnxruntime-cpu``."""

    notice: str | None = None

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        threads: int | None = None,
        workers: int | None = None,
        max_batch: int | None = None,
        providers: Sequence[str] = ("CPUExecutionProvider",),
    ):
        path = Path(path)
        if path.is_dir():
            raise ModelLoadError(f"{path}: is a folder, not a model file (an .onnx model, or a TensorRT .engine)")
        if not path.is_file():
            raise ModelLoadError(f"model not found: {path}")
        on_cpu = providers[0] == "CPUExecutionProvider"
        # A GPU provider serializes calls on its device anyway: one call at a time, all cores for its CPU nodes.
        self.threads, self.concurrency = DEFAULTS.cpu_split(threads, workers) if on_cpu else (threads or available_cores(), 1)
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        # ORT's intra-op threads spin-wait between ops by default; in a scan the reader and
        # renderer threads need those cycles.  Measured on 2 cores, 5490 px scene, batch 8:
        # 4.5 s with spinning, 2.9-4.1 s without.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(str(path), options, providers=list(providers))
        except Exception as exc:  # ORT raises its own exception types for every kind of bad file
            reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise ModelLoadError(f"{path}: not a loadable ONNX model ({reason})") from exc
        self.path = path
        self.providers = tuple(self._session.get_providers())
        self.backend = _BACKEND_NAMES.get(self.providers[0], f"onnxruntime-{self.providers[0]}")
        inputs, outputs = [_spec(a) for a in self._session.get_inputs()], [_spec(a) for a in self._session.get_outputs()]
        # A tile classifier loads here too (told by its outputs): ``detect`` then answers probabilities per tile.
        self.task = model_task(str(path), inputs, outputs)
        self.signature = (check_contract(str(path), inputs, outputs) if self.task == "detector"
                          else check_classifier(str(path), inputs, outputs))
        try:
            self.metadata = parse_metadata(self._session.get_modelmeta().custom_metadata_map)
            check_input_size(self.metadata, self.signature)
            if self.metadata.task is not None and self.metadata.task != self.task:
                raise MetadataError(f"metadata 'minescan.task' says {self.metadata.task} but the graph's outputs make it a {self.task}")
        except MetadataError as exc:
            raise MetadataError(f"{path}: {exc}") from None
        self._max_batch = self.signature.batch or max_batch

    @property
    def output_types(self) -> dict[str, np.dtype]:
        """The numpy type of each contract output, as the graph declares it."""
        types = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
                 "tensor(int32)": np.int32, "tensor(int64)": np.int64, "tensor(uint8)": np.uint8}
        return {o.name: np.dtype(types.get(o.type, np.float32)) for o in self._session.get_outputs() if o.name in OUTPUT_NAMES}

    def run_contract(self, tiles: np.ndarray) -> dict[str, np.ndarray]:
        """The model's raw contract outputs for a uint8 [B, H, W, 3] batch, split to its batch size and joined.

        What a served infer answers (``minescan serve``): ``detection_boxes`` [B, K, 4] normalized, scores,
        classes [B, K], ``num_detections`` [B], in the graph's own types.
        """
        check_tiles(tiles, self.signature)
        parts = [self._session.run(list(OUTPUT_NAMES), {INPUT_NAME: chunk}) for chunk in split_batch(tiles, self._max_batch)]
        joined = {}
        for index, name in enumerate(OUTPUT_NAMES):
            arrays = [p[index] for p in parts]
            if any(a.shape[0] != len(c) for a, c in zip(arrays, split_batch(tiles, self._max_batch))):
                raise ContractError(f"{self.path}: {name} came back with a batch other than the input's")
            joined[name] = np.concatenate(arrays) if len(arrays) > 1 else arrays[0]
        return joined

    def classify(self, tiles: np.ndarray) -> np.ndarray:
        """A classifier's class probabilities [B, C] for a uint8 [B, H, W, 3] batch."""
        check_tiles(tiles, self.signature)
        name = self.signature.output
        parts = [self._session.run([name], {INPUT_NAME: chunk})[0] for chunk in split_batch(tiles, self._max_batch)]
        probabilities = np.concatenate(parts) if len(parts) > 1 else parts[0]
        if probabilities.shape[0] != len(tiles):
            raise ContractError(f"{self.path}: {name} came back {list(probabilities.shape)} for a batch of {len(tiles)}")
        return probabilities.astype(np.float32, copy=False)

    def detect(self, tiles: np.ndarray, score_threshold: float = 0.0) -> list:
        """Detections for each tile of a uint8 [B, H, W, 3] batch, split to the model's batch size.

        For a classifier: each tile's class probabilities [C] (what the heatmap consumer takes).
        """
        if self.task == "classifier":
            return list(self.classify(tiles))
        check_tiles(tiles, self.signature)
        height, width = tiles.shape[1:3]
        results: list[TileDetections] = []
        for chunk in split_batch(tiles, self._max_batch):
            values = self._session.run(list(OUTPUT_NAMES), {INPUT_NAME: chunk})
            boxes = values[0]
            if boxes.shape[0] != len(chunk) or boxes.ndim != 3 or boxes.shape[2] != 4:
                raise ContractError(
                    f"{self.path}: detection_boxes came back {list(boxes.shape)} for a batch of {len(chunk)}"
                )
            results.extend(BatchDetections.from_outputs(dict(zip(OUTPUT_NAMES, values))).per_tile(height, width, score_threshold))
        return results
