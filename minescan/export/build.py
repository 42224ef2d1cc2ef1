"""``minescan build``: compile a contract ONNX model into a TensorRT engine for this GPU.

The steps, with TensorRT 10's Python API:

1. parse the ONNX file into a network (``OnnxParser.parse_from_file``, which
   also reads external weight files), created *strongly typed* where TensorRT
   offers the flag: tensor types then follow the graph, so an FP16 graph
   (explicit casts) builds in FP16 and an INT8 one in explicit Q/DQ, with no
   precision builder flags or calibrators (TensorRT 11 removed both);
2. check the network's inputs and outputs against the detector contract;
3. give ``input_tensor`` one optimization profile
   (:mod:`minescan.export.build_profile`) and cap the workspace memory pool;
4. load the timing cache file if there is one: it keeps the kernel timings of
   earlier builds on this GPU and TensorRT, which makes rebuilds much faster
   (a file TensorRT cannot read, or one from another TensorRT or GPU, is
   refused naming the file);
5. ``build_serialized_network``, then write the engine, the updated timing
   cache and the sidecar ``<engine>.json`` (:mod:`minescan.engine.engine_sidecar`),
   each atomically.

Importing this module imports TensorRT (see
:mod:`minescan.engine.tensorrt_common`), so the command imports it lazily.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import onnx

from minescan.model.contract import INPUT_NAME, check_contract
from minescan.engine.cuda_runtime import gpu_info
from minescan.engine.engine_sidecar import EngineSidecar, sha256_file, sidecar_path
from minescan.model.metadata import parse_metadata
from minescan.engine.tensorrt_common import LOGGER, build_target, create_builder, dims, tensor_spec, trt
from minescan.results.atomic import write_atomically
from minescan.export.build_profile import DEFAULT_BATCH, DEFAULT_WORKSPACE_GB, Batch, check_batch, check_engine_path, plan_profile
from minescan.export.errors import ExportError


@dataclass(frozen=True)
class BuildReport:
    """What a build wrote and how long it took."""

    engine_path: Path
    engine_bytes: int
    timing_cache: Path | None
    seconds: float
    sidecar: EngineSidecar

    def format(self) -> str:
        """A few lines for the command line."""
        target, profile = self.sidecar.target, self.sidecar.profile
        lines = [
            f"built {self.engine_path} ({self.engine_bytes / 2**20:.1f} MiB) in {self.seconds:.1f} s "
            f"with TensorRT {target.tensorrt_version} on {target.gpu_name} (compute capability {target.compute_capability})",
            f"profile {profile.input}: min {list(profile.min)}, opt {list(profile.opt)}, max {list(profile.max)}",
        ]
        if profile.note:
            lines.append(f"note: {profile.note}")
        lines.append(f"sidecar {sidecar_path(self.engine_path)}")
        if self.timing_cache:
            lines.append(f"timing cache {self.timing_cache}")
        return "\n".join(lines)


def _parse(onnx_path: Path, network: trt.INetworkDefinition) -> None:
    parser = trt.OnnxParser(network, LOGGER)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors)) or "no detail"
        raise ExportError(f"{onnx_path}: TensorRT's ONNX parser refused the model: {errors}")


def _check_network(onnx_path: Path, network: trt.INetworkDefinition) -> tuple[int, ...]:
    """Check the contract on the parsed network; return the input's shape (-1 = run-time dimension)."""
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    outputs = [network.get_output(i) for i in range(network.num_outputs)]
    check_contract(
        str(onnx_path),
        [tensor_spec(t.name, t.dtype, dims(t.shape)) for t in inputs],
        [tensor_spec(t.name, t.dtype, dims(t.shape)) for t in outputs],
    )
    return next(dims(t.shape) for t in inputs if t.name == INPUT_NAME)


def _timing_cache(config: trt.IBuilderConfig, path: Path | None) -> None:
    """Give ``config`` the timing cache in file ``path`` (a new, empty one when there is no file yet)."""
    try:
        serialized = path.read_bytes() if path is not None and path.is_file() else b""
    except OSError as exc:
        raise ExportError(f"timing cache {path}: cannot read it ({exc.strerror or exc})") from None
    # Bytes TensorRT cannot parse come back as None (TensorRT logs why), which set_timing_cache then refuses
    # with a TypeError; either call may also raise on them itself.
    try:
        cache = config.create_timing_cache(serialized)
        accepted = cache is not None and config.set_timing_cache(cache, ignore_mismatch=False)
        unreadable = cache is None
    except (TypeError, RuntimeError, ValueError) as exc:
        raise ExportError(
            f"timing cache {path}: TensorRT cannot read it ({type(exc).__name__}: {exc}); delete it or give another timing cache file"
        ) from None
    if unreadable:
        raise ExportError(
            f"timing cache {path}: TensorRT cannot read it (corrupt or not a timing cache); delete it or give another timing cache file"
        )
    if not accepted:
        raise ExportError(f"timing cache {path} was made by another TensorRT or GPU: delete it or give another timing cache file")


def build_engine(
    onnx_path: str | os.PathLike[str],
    engine_path: str | os.PathLike[str],
    *,
    batch: Batch = DEFAULT_BATCH,
    workspace_gb: float = DEFAULT_WORKSPACE_GB,
    timing_cache: str | os.PathLike[str] | None = None,
    size: tuple[int, int] | None = None,
) -> BuildReport:
    """Build ``onnx_path`` into ``engine_path`` plus its sidecar; ``size`` is the tile (height, width)
    when the graph leaves it open and the model's metadata does not say."""
    start = time.perf_counter()
    onnx_path, engine_path = Path(onnx_path), check_engine_path(engine_path)
    cache_path = Path(timing_cache) if timing_cache is not None else None
    if not onnx_path.is_file():
        raise ExportError(f"ONNX model not found: {onnx_path}")
    if workspace_gb <= 0:
        raise ExportError(f"workspace must be positive, got {workspace_gb} GB")
    batch = check_batch(batch)
    target = build_target(gpu_info())
    props = {p.key: p.value for p in onnx.load(str(onnx_path), load_external_data=False).metadata_props}
    size = size or parse_metadata(props).input_size

    builder = create_builder()
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    _parse(onnx_path, network)
    profile = plan_profile(INPUT_NAME, _check_network(onnx_path, network), batch, size, str(onnx_path))

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * 2**30))
    shapes = builder.create_optimization_profile()
    shapes.set_shape(profile.input, trt.Dims(list(profile.min)), trt.Dims(list(profile.opt)), trt.Dims(list(profile.max)))
    if config.add_optimization_profile(shapes) < 0:
        raise ExportError(
            f"{onnx_path}: TensorRT refused the optimization profile of {profile.input} "
            f"(min {list(profile.min)}, opt {list(profile.opt)}, max {list(profile.max)}; its log above says why)"
        )
    _timing_cache(config, cache_path)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"{onnx_path}: TensorRT could not build an engine (its log above says why)")

    engine = memoryview(serialized)
    engine_bytes = write_atomically(engine_path, engine)
    if cache_path is not None:
        write_atomically(cache_path, memoryview(config.get_timing_cache().serialize()))
    sidecar = EngineSidecar(
        engine_sha256=hashlib.sha256(engine).hexdigest(),
        target=target,
        onnx_sha256=sha256_file(onnx_path),
        profile=profile,
        metadata={k: v for k, v in props.items() if k.startswith("minescan.")},
    )
    write_atomically(sidecar_path(engine_path), sidecar.to_json().encode())
    return BuildReport(engine_path, engine_bytes, cache_path, time.perf_counter() - start, sidecar)
