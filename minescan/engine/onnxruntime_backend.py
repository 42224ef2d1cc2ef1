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

On a GPU provider (none of this has run on a GPU yet; the calls are checked
against a stand-in session in tests/test_gpu_providers.py):

- before the session starts, ``onnxruntime.preload_dlls()`` (ORT >= 1.21) loads
  CUDA and cuDNN from the nvidia-* wheels (:func:`preload_gpu_libraries`); the
  CPU path never calls it;
- once it has started on a GPU provider, ``session.disable_fallback()``: ONNX
  Runtime's Python session otherwise answers a provider failure at run time by
  rebuilding itself on the CPU and carrying on, while ``backend`` would still
  name the GPU;
- the TensorRT provider gets engine and timing caches
  (:func:`tensorrt_options`) under :func:`tensorrt_cache_dir`, so only its first
  start builds the engine;
- on the CUDA provider each call runs through an I/O binding
  (:func:`run_bound`): the batch is uploaded once into a device ``OrtValue`` and
  the outputs stay on the device until read back once, in one copy.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import onnxruntime as ort

from minescan.defaults import DEFAULTS, available_cores
from minescan.model.contract import (
    INPUT_NAME, OUTPUT_NAMES, ContractError, TensorSpec, check_classifier, check_contract, model_task,
)
from minescan.model.detections import BatchDetections, TileDetections
from minescan.engine.backends import CPU, CUDA, TENSORRT
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


if TYPE_CHECKING:
    from minescan.raster.gpu_render import DeviceBatch


GPU_PROVIDERS = frozenset({CUDA, TENSORRT})
_DEVICE = ("cuda", 0)  # ONNX Runtime's CUDA provider runs on device 0 unless given a device_id, and minescan gives none


def preload_gpu_libraries() -> None:
    """Load CUDA and cuDNN from the nvidia-* wheels before a GPU session starts (``onnxruntime.preload_dlls``).

    ONNX Runtime >= 1.21 has it; an older one has nothing to call and relies on the loader's
    paths.  It looks in the ``nvidia/`` packages beside ``onnxruntime/``, then the loader's
    default paths, and only prints what it cannot load: a provider that then cannot start is
    reported by the session (:func:`minescan.engine.backends.check_providers`).
    """
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return
    try:
        preload()
    except Exception:  # an odd install (a missing folder): the session's start says what is wrong, in context
        pass


def tensorrt_cache_dir() -> Path:
    """Where the TensorRT provider keeps its engines and timing cache (``DEFAULTS.ort_trt_cache`` when set).

    Default: ``$XDG_CACHE_HOME/minescan/ort-trt``, else ``~/.cache/minescan/ort-trt``.
    """
    if DEFAULTS.ort_trt_cache:
        return Path(DEFAULTS.ort_trt_cache).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "minescan" / "ort-trt"


def model_key(path: Path) -> str:
    """``<stem>-<sha256 of the file, 16 hex>-ort<version>``: one engine folder per model content and ONNX Runtime.

    ONNX Runtime's TensorRT provider documentation says its engine cache files "must be
    invalidated if there are any changes to the model, ORT version, TensorRT version or if the
    underlying hardware changes" and leaves that to the user: a retrained model under the same
    name could load the old engine.  The model's content and ONNX Runtime's version are in this
    key; the GPU's architecture is in ONNX Runtime's own file names (``..._sm90.engine``); after a
    TensorRT upgrade, delete the cache folder.  Hashing the file costs about a second per GB, once
    per session start.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as model:
        for block in iter(lambda: model.read(1 << 20), b""):
            digest.update(block)
    return f"{path.stem}-{digest.hexdigest()[:16]}-ort{ort.__version__}"


def tensorrt_options(path: Path, cache: Path | None = None) -> dict[str, str]:
    """The TensorRT provider's options for the model at ``path``: engines cached per model, timing shared.

    Engines go to ``cache/<model_key>``; the timing cache (layer tactics timed on this GPU,
    valid for any model) to ``cache`` itself.  ``trt_fp16_enable`` stays off: precision comes
    from the graph (an FP16 export, :mod:`minescan.export.precision`), never from the builder.
    """
    cache = tensorrt_cache_dir() if cache is None else cache
    engines = cache / model_key(path)
    engines.mkdir(parents=True, exist_ok=True)
    return {
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": str(engines),
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": str(cache),
        "trt_fp16_enable": "False",
    }


def run_bound(session: ort.InferenceSession, names: list[str], tiles: np.ndarray) -> list[np.ndarray]:
    """``names``' outputs for ``tiles`` through an I/O binding on the CUDA device.

    The batch is uploaded once into a device ``OrtValue``; the outputs are bound to the device
    (ONNX Runtime allocates them, their shapes being known only after the run) and copied to
    the host once, in ``names``' order, after ``run_with_iobinding`` (which synchronizes).
    """
    binding = session.io_binding()
    binding.bind_ortvalue_input(INPUT_NAME, ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(tiles), *_DEVICE))
    for name in names:
        binding.bind_output(name, *_DEVICE)
    session.run_with_iobinding(binding)
    return binding.copy_outputs_to_cpu()


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
        self.on_cpu = providers[0] == CPU
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
        self._bound = self.providers[0] == CUDA  # run_bound; every other provider takes numpy through session.run
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
        if not self.on_cpu:
            preload_gpu_libraries()
        try:
            session = ort.InferenceSession(str(self.path), options, providers=self._provider_list())
        except Exception as exc:  # ORT raises its own exception types for every kind of bad file
            reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise ModelLoadError(f"{self.path}: not a loadable ONNX model ({reason})") from exc
        if session.get_providers()[0] in GPU_PROVIDERS:
            session.disable_fallback()  # a GPU failure at run time raises, never quietly continues on the CPU
        return session

    def _provider_list(self) -> list[str | tuple[str, dict[str, str]]]:
        """The providers as ONNX Runtime takes them: the TensorRT provider with its caches (:func:`tensorrt_options`)."""
        return [(name, tensorrt_options(self.path)) if name == TENSORRT else name for name in self._providers]

    def _run(self, names: list[str], tiles: np.ndarray) -> list[np.ndarray]:
        """The named outputs for one chunk: bound to the device on the CUDA provider, else numpy in and out."""
        if self._bound:
            return run_bound(self._session, names, tiles)
        return self._session.run(names, {INPUT_NAME: tiles})

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
        parts = [self._run(list(OUTPUT_NAMES), chunk) for chunk in split_batch(tiles, self._max_batch)]
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
        parts = [self._run([name], chunk)[0] for chunk in split_batch(tiles, self._max_batch)]
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
            results.extend(self._per_tile(self._run(list(OUTPUT_NAMES), chunk), len(chunk), height, width, score_threshold))
        return results

    def detect_device(self, batch: DeviceBatch, score_threshold: float = 0.0) -> list[TileDetections]:
        """:meth:`detect` for a batch a render stage left in memory (:mod:`minescan.raster.gpu_render`), bound by its address.

        The batch is the session's input as it lies (no copy; split into the model's batch size by
        address), the outputs are bound to the same device and read back once per chunk.  On the
        CUDA provider the stage's stream must have finished (the caller synchronizes it).
        """
        if self.task == "classifier":
            raise ContractError(f"{self.path}: a tile classifier takes host batches (detect), not a device batch")
        count, height, width, bands = batch.shape
        check_tiles(np.empty((0, height, width, bands), np.uint8), self.signature)
        step = self._max_batch or count
        tile_bytes = height * width * bands
        results: list[TileDetections] = []
        for start in range(0, count, step):
            n = min(step, count - start)
            binding = self._session.io_binding()
            binding.bind_input(INPUT_NAME, batch.device_type, batch.device, np.uint8, [n, height, width, bands],
                               batch.pointer + start * tile_bytes)
            for name in OUTPUT_NAMES:
                binding.bind_output(name, batch.device_type, batch.device)
            self._session.run_with_iobinding(binding)
            results.extend(self._per_tile(binding.copy_outputs_to_cpu(), n, height, width, score_threshold))
        return results

    def _per_tile(self, values: list[np.ndarray], count: int, height: int, width: int, score_threshold: float) -> list[TileDetections]:
        """One chunk's outputs (in :data:`OUTPUT_NAMES` order) as each tile's detections, their shape checked."""
        boxes = values[0]
        if boxes.shape[0] != count or boxes.ndim != 3 or boxes.shape[2] != 4:
            raise ContractError(f"{self.path}: detection_boxes came back {list(boxes.shape)} for a batch of {count}")
        return BatchDetections.from_outputs(dict(zip(OUTPUT_NAMES, values))).per_tile(height, width, score_threshold)
