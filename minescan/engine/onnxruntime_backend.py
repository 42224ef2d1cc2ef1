"""The default backend: ONNX Runtime, on the CPU or (with onnxruntime-gpu) a GPU execution provider.

The session is created once per model with explicit thread settings and the
model is checked against the OD API contract before anything runs, its
``minescan.*`` metadata too (:class:`~minescan.model.metadata.MetadataError`
naming the file and the key: see :mod:`minescan.model.metadata`).

On the CPU a scan runs several ``detect`` calls at once (``concurrency``),
each on its own intra-op threads.  What the caller does not give is chosen
from the model's measured cost within a memory budget
(:meth:`OnnxRuntimeDetector.limit_memory`, :mod:`minescan.engine.memory_budget`):
one probe call at load times a tile and measures the memory a call in flight
adds; a cheap model gets one call per core (at most :data:`MAX_WORKERS`), a
costly one fewer calls with more threads, and never more calls than the
budget holds.  For cheap models tiles are independent, so running them
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
from minescan.engine.memory_budget import CpuSplit, MemoryBudget, ModelCost, choose_split, probe_call
from minescan.errors import MinescanError


class ModelLoadError(MinescanError):
    """A model file is missing or cannot be read."""


def _spec(arg: ort.NodeArg) -> TensorSpec:
    dtype = arg.type[len("tensor(") : -1] if arg.type.startswith("tensor(") else arg.type
    shape = tuple(d if isinstance(d, int) else None for d in (arg.shape or []))
    return TensorSpec(arg.name, dtype, shape)


MAX_WORKERS = DEFAULTS.max_workers  # concurrent calls on the CPU; more cores go to each call's intra-op threads

# ONNX Runtime session memory settings (SessionOptions attributes) for costly models (see
# minescan.engine.memory_budget): no memory patterns, so ORT does not pre-plan (and hold) one block per
# input shape on top of its arena; the arena stays, so each call's activations reuse its memory.  Measured
# 2026-12-03 on 2 shared cores (load 4-6), ResNet-50 fixture Faster R-CNN, one 2-thread call, 9 tiles of
# 640 px, three alternating rounds: peak RSS 1330-1338 MiB with ORT's defaults, 1090-1095 MiB without
# memory patterns, and the same CPU time (user + sys 18.7-20.3 s against 19.3-19.9 s).  Without the arena
# too, peak RSS was no lower (1069-1173 MiB) and every call page-faulted its activations afresh: sys time
# 4.5-4.9 s against 1.0, CPU time +20%.  Cheap models keep ORT's defaults: their calls are small, and the
# demo detector without the arena peaked higher on its 64-tile scene (554 MiB against 494-501) and was no
# faster; without memory patterns alone it is not measured.  Full table: benchmarks/memory_defaults.md.
SESSION_MEMORY_SETTINGS: dict[str, object] = {"enable_mem_pattern": False}


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
        max_memory: int | str | None = None,
        planning_only: bool = False,
    ):
        path = Path(path)
        # planning_only: the model is only read for its contract and metadata (a Ray run's driver plans, its
        # workers scan): no graph optimisation and no probe call.  Measured on the ResNet-50 fixture: 0.25 s
        # instead of 3.1 s and no 720 MB probe call.  detect() still works, unoptimised.
        self._planning_only = planning_only
        if path.is_dir():
            raise ModelLoadError(f"{path}: is a folder, not a model file (an .onnx model, or a TensorRT .engine)")
        if not path.is_file():
            raise ModelLoadError(f"model not found: {path}")
        self.path = path
        self._providers = tuple(providers)
        self._asked = (threads, workers)
        self.on_cpu = providers[0] == "CPUExecutionProvider"
        # A GPU provider serializes calls on its device anyway: one call at a time, all cores for its CPU nodes.
        self.threads, self.concurrency = DEFAULTS.cpu_split(threads, workers) if self.on_cpu else (threads or available_cores(), 1)
        self.cost: ModelCost | None = None  # the probe call's measure (CPU only; see minescan.engine.memory_budget)
        self.split: CpuSplit | None = None  # the chosen split and why (CPU only)
        # On the CPU the first session is built as a costly model runs (lean, a costly split's threads unless the
        # caller chose), so a costly model, the one whose session is slow to build and holds much memory, keeps
        # it; a cheap one is rebuilt after the probe (milliseconds).
        self._lean = self.on_cpu  # SESSION_MEMORY_SETTINGS applied
        if self.on_cpu and threads is None and workers is None:
            self.threads = DEFAULTS.costly_split()[0]
        self._session = self._open(self.threads, self._lean)
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
        if self.on_cpu and not planning_only:
            self.limit_memory(max_memory)

    def _open(self, threads: int, lean: bool = False) -> ort.InferenceSession:
        """A session on ``threads`` intra-op threads; ``lean``: with :data:`SESSION_MEMORY_SETTINGS`."""
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # ORT's intra-op threads spin-wait between ops by default; in a scan the reader and
        # renderer threads need those cycles.  Measured on 2 cores, 5490 px scene, batch 8:
        # 4.5 s with spinning, 2.9-4.1 s without.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        if self._planning_only:
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        for name, value in (SESSION_MEMORY_SETTINGS.items() if lean else ()):
            setattr(options, name, value)
        try:
            return ort.InferenceSession(str(self.path), options, providers=list(self._providers))
        except Exception as exc:  # ORT raises its own exception types for every kind of bad file
            reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise ModelLoadError(f"{self.path}: not a loadable ONNX model ({reason})") from exc

    def limit_memory(self, max_memory: int | str | None = None) -> CpuSplit | None:
        """Choose (threads per call, concurrent calls) for this model within ``max_memory`` (bytes or ``2G``).

        None: the default budget (:class:`~minescan.engine.memory_budget.MemoryBudget`).  What the
        caller gave at load (``threads``, ``workers``) is kept.  The first time, one probe call on
        zero tiles measures the model (:func:`~minescan.engine.memory_budget.probe_call`); the
        session is rebuilt if the chosen threads differ, and for a costly model with
        :data:`SESSION_MEMORY_SETTINGS`.  Raises
        :class:`~minescan.engine.memory_budget.MemoryBudgetError` when an explicit budget cannot
        hold the calls.  GPU providers: nothing to choose (None); their memory is on the device.
        """
        if not self.on_cpu:
            return None
        budget = MemoryBudget.of(max_memory)
        if self.cost is None:
            size = self.signature.height or DEFAULTS.tile
            count = self.signature.batch or 1
            tiles = np.zeros((count, size, self.signature.width or size, 3), np.uint8)
            try:
                self.cost = probe_call(lambda: self._session.run(None, {INPUT_NAME: tiles}), count, size, self.threads)
            except Exception:  # a graph that cannot run zero tiles fails at its first real call, in its own words
                self.cost = None
        threads, workers = self._asked
        split = choose_split(self.cost, budget, threads=threads, workers=workers)
        lean = self.cost is not None and self.cost.seconds_per_tile >= DEFAULTS.costly_call_s
        if split.threads != self.threads or lean != self._lean:
            del self._session  # freed before its successor is built: one model's weights in memory, not two
            self._session = self._open(split.threads, lean)
        self.threads, self.concurrency, self.split, self._lean = split.threads, split.workers, split, lean
        return split

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
