"""A Triton Inference Server model repository for a minescan detector.

:func:`write_triton_repository` lays out ``REPO/NAME/`` for Triton:

* ``1/model.onnx`` (platform ``onnxruntime_onnx``), a copy of an ONNX
  detector, or ``1/model.plan`` (platform ``tensorrt_plan``) from a
  TensorRT engine (``.plan``/``.engine``) built by ``minescan build``, whose
  sidecar (:mod:`minescan.engine.engine_sidecar`) gives the input shape
  and the labels.  TensorRT is neither needed nor imported: the engine
  file is copied, never opened, after its SHA-256 is checked against the
  sidecar's;
* ``labels.txt``: the class names, line k holding class id k (ids are
  1-based, gaps filled with ``class_<id>``).  It is *not* referenced by
  ``label_filename``: Triton applies that to classification outputs (a
  score per class, reduced by the classification extension), and
  ``detection_classes`` holds class ids per box, so the config says so in
  a comment instead;
* ``config.pbtxt``, written last, so a Triton polling the repository never
  sees a config without its model.  It is built as a ``ModelConfig``
  message of Triton's own protobuf (``tritonclient.grpc.model_config_pb2``)
  and printed with ``google.protobuf.text_format``, so it is valid
  protobuf text by construction.

Dims follow Triton's rules.  With ``max_batch_size > 0`` Triton owns the
batch: the first dimension is left out of ``dims`` and the model must take a
variable-size first dimension on every input and output: ``input_tensor``
TYPE_UINT8 ``[-1, -1, 3]`` (or the fixed H, W), ``detection_boxes``
``[-1, 4]``, ``detection_scores``/``detection_classes`` ``[-1]`` and
``num_detections`` ``[1]`` with an empty ``reshape`` (Triton requires
non-empty dims; the reshape maps them to the model's batch-only shape).
With ``max_batch_size: 0`` dims are the model's full shapes (-1 where they
are open) and there is no dynamic batcher.  Element types come from the
ONNX graph; a plan's sidecar records none, so its outputs are declared
TYPE_FP32, what ``minescan export`` writes, and Triton checks them against
the engine when it loads it.

A fixed batch: a TF Object Detection API export takes batch 1 only (its
graph processes image 0).  An ONNX detector whose first dimension is fixed
at 1 and ``max_batch > 0`` gets it freed here
(:func:`minescan.export.batch_loop.free_batch`, checked by
:func:`~minescan.export.batch_loop.verify_free_batch` on synthetic tiles), and
the report says so; where that fails, it is refused in one line telling to
re-export with ``minescan export --free-batch``.  A plan cannot be changed:
one whose profile takes batch 1 only is refused for ``max_batch > 0``
(conservatively: a 1:1:1 profile of a variable batch would do for
``max_batch 1``, but the sidecar cannot tell the two apart).  A symbolic
batch is trusted as declared (``minescan export`` probes it before
declaring it).

Every fault is an :class:`~minescan.export.errors.ExportError` of one line;
files are written with :func:`minescan.results.atomic.write_atomically`.
``tritonclient`` (the optional dependency that ships the protobuf) is
imported only when a repository is written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from minescan.engine.backends import ENGINE_SUFFIXES
from minescan.export.errors import ExportError
from minescan.model.contract import INPUT_NAME, OUTPUT_NAMES, TensorSpec, contract_problems

if TYPE_CHECKING:
    from minescan.export.batch_loop import FreeBatchCheck

DEFAULT_MAX_BATCH = 8
DEFAULT_QUEUE_DELAY_US = 100
"""The dynamic batcher's wait for more requests: small next to a detector's milliseconds per tile."""
KINDS = ("cpu", "gpu")
PLAN_SUFFIXES = ENGINE_SUFFIXES  # one rule for what names a TensorRT engine (minescan.engine.backends)
ONNX_PLATFORM = "onnxruntime_onnx"
PLAN_PLATFORM = "tensorrt_plan"
INSTALL_HINT = "pip install 'tritonclient[grpc]'"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_CONTRACT_LAYOUT = {"detection_boxes": (-1, -1, 4), "detection_scores": (-1, -1), "detection_classes": (-1, -1), "num_detections": (-1,)}
# ONNX TensorProto element type names -> Triton DataType names.
_TRITON_TYPES = {
    "FLOAT": "TYPE_FP32", "FLOAT16": "TYPE_FP16", "DOUBLE": "TYPE_FP64", "BFLOAT16": "TYPE_BF16",
    "UINT8": "TYPE_UINT8", "UINT16": "TYPE_UINT16", "UINT32": "TYPE_UINT32", "UINT64": "TYPE_UINT64",
    "INT8": "TYPE_INT8", "INT16": "TYPE_INT16", "INT32": "TYPE_INT32", "INT64": "TYPE_INT64",
    "BOOL": "TYPE_BOOL", "STRING": "TYPE_STRING",
}


@dataclass(frozen=True)
class TritonTensor:
    """One config input or output: name, Triton data type name, dims, and whether an empty reshape follows."""

    name: str
    data_type: str
    dims: tuple[int, ...]
    reshape_to_scalar: bool = False

    def format(self) -> str:
        return f"{self.name} {self.data_type} {list(self.dims)}" + (" (reshape [])" if self.reshape_to_scalar else "")


@dataclass(frozen=True)
class TritonReport:
    """What :func:`write_triton_repository` wrote, and the decisions it made."""

    model_dir: Path
    name: str
    platform: str
    model_file: Path
    config_path: Path
    labels_path: Path | None
    max_batch_size: int
    preferred_batch: tuple[int, ...]
    max_queue_delay_us: int | None  # None: no dynamic batcher (max_batch_size 0)
    instances: int
    kind: str  # "KIND_CPU" or "KIND_GPU"
    inputs: tuple[TritonTensor, ...]
    outputs: tuple[TritonTensor, ...]
    freed_batch: FreeBatchCheck | None = None  # set when the batch was freed here
    notes: tuple[str, ...] = ()

    def format(self) -> str:
        """A few readable lines."""
        written = [self.config_path.name, f"{self.model_file.parent.name}/{self.model_file.name}"]
        if self.labels_path is not None:
            written.append(self.labels_path.name)
        if self.max_queue_delay_us is None:
            batching = "max_batch_size 0 (no batching: clients send whole batches)"
        else:
            preferred = f"preferred {list(self.preferred_batch)}, " if self.preferred_batch else ""
            batching = f"max_batch_size {self.max_batch_size}, dynamic batching ({preferred}max queue delay {self.max_queue_delay_us} us)"
        lines = [
            f"wrote Triton model {self.name!r} ({self.platform}) in {self.model_dir}: {', '.join(written)}",
            f"{batching}; {self.instances} x {self.kind}",
            "input " + "; ".join(t.format() for t in self.inputs),
            "outputs " + "; ".join(t.format() for t in self.outputs),
        ]
        if self.freed_batch is not None:
            lines.append(f"batch freed (the graph took batch 1 only): {self.freed_batch.format()}")
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def write_triton_repository(
    model_path: str | Path,
    repo_dir: str | Path,
    *,
    name: str | None = None,
    max_batch: int = DEFAULT_MAX_BATCH,
    instances: int = 1,
    kind: str | None = None,
    preferred_batch: Sequence[int] | None = None,
    max_queue_delay_us: int = DEFAULT_QUEUE_DELAY_US,
) -> TritonReport:
    """Write ``repo_dir/NAME/{config.pbtxt, 1/model.onnx|1/model.plan, labels.txt}`` for ``model_path``.

    ``name`` defaults to the model file's stem; ``max_batch`` 0 turns Triton's
    batching off; ``kind`` is ``"cpu"`` or ``"gpu"`` (default: cpu for ONNX,
    gpu for a TensorRT plan, which cannot run on a CPU); ``preferred_batch``
    sizes (each 1..max_batch) and ``max_queue_delay_us`` configure the dynamic
    batcher.  Raises :class:`ExportError` (one line) for a missing or
    unreadable model, one outside the detector contract, or bad options.
    """
    model_path = Path(model_path)
    is_plan = model_path.suffix.lower() in PLAN_SUFFIXES
    _check_options(max_batch, instances, kind, preferred_batch, max_queue_delay_us)
    if is_plan and kind == "cpu":
        raise ExportError(f"{model_path}: a TensorRT plan runs on a GPU only; use --kind gpu")
    name = _model_name(name, model_path)
    if not model_path.is_file():
        raise ExportError(f"{model_path}: no such model file")
    mc = _model_config_pb2()
    if is_plan:
        model_bytes, spec = _plan_spec(model_path, max_batch)
    else:
        model_bytes, spec = _onnx_spec(model_path, max_batch)

    kind_name = "KIND_GPU" if (kind or ("gpu" if is_plan else "cpu")) == "gpu" else "KIND_CPU"
    config = mc.ModelConfig(name=name, platform=spec.platform, max_batch_size=max_batch)
    for tensor, repeated in [(t, config.input) for t in spec.inputs] + [(t, config.output) for t in spec.outputs]:
        entry = repeated.add(name=tensor.name, data_type=mc.DataType.Value(tensor.data_type), dims=list(tensor.dims))
        if tensor.reshape_to_scalar:
            entry.reshape.SetInParent()
    if max_batch > 0:
        config.dynamic_batching.SetInParent()
        config.dynamic_batching.preferred_batch_size.extend(preferred_batch or ())
        config.dynamic_batching.max_queue_delay_microseconds = max_queue_delay_us
    config.instance_group.add(count=instances, kind=mc.ModelInstanceGroup.Kind.Value(kind_name))

    from google.protobuf import text_format

    from minescan.results.atomic import write_atomically

    model_dir = Path(repo_dir) / name
    if Path(repo_dir).exists() and not Path(repo_dir).is_dir():
        raise ExportError(f"{repo_dir}: exists and is not a folder; give a model repository folder")
    model_file = model_dir / "1" / ("model.plan" if is_plan else "model.onnx")
    notes = list(spec.notes)
    other = model_file.with_name("model.onnx" if is_plan else "model.plan")
    if other.exists():
        notes.append(f"{other} from an earlier export is left in place; Triton reads only {model_file.name} for {spec.platform}")
    write_atomically(model_file, model_bytes)
    labels_path = None
    if spec.labels:
        labels_path = model_dir / "labels.txt"
        write_atomically(labels_path, _labels_text(spec.labels).encode())
    config_path = model_dir / "config.pbtxt"
    header = _header(model_path, spec, labels_path is not None)
    write_atomically(config_path, (header + text_format.MessageToString(config)).encode())
    return TritonReport(
        model_dir=model_dir,
        name=name,
        platform=spec.platform,
        model_file=model_file,
        config_path=config_path,
        labels_path=labels_path,
        max_batch_size=max_batch,
        preferred_batch=tuple(preferred_batch or ()) if max_batch > 0 else (),
        max_queue_delay_us=max_queue_delay_us if max_batch > 0 else None,
        instances=instances,
        kind=kind_name,
        inputs=spec.inputs,
        outputs=spec.outputs,
        freed_batch=spec.freed,
        notes=tuple(notes),
    )


# --- the model's side -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Spec:
    platform: str
    inputs: tuple[TritonTensor, ...]
    outputs: tuple[TritonTensor, ...]
    labels: Mapping[int, str]
    freed: FreeBatchCheck | None = None
    notes: tuple[str, ...] = ()


def _onnx_spec(path: Path, max_batch: int) -> tuple[bytes, _Spec]:
    import onnx

    from minescan.export.batch_loop import check_tiles, free_batch, verify_free_batch
    from minescan.export.onnx_metadata import read_metadata

    data = path.read_bytes()
    try:
        model = onnx.load_from_string(data)
    except Exception as exc:  # onnx raises DecodeError and friends
        raise ExportError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from exc
    if not model.graph.node and not model.graph.input:
        raise ExportError(f"{path}: not a readable ONNX model (no graph)")
    if any(onnx.external_data_helper.uses_external_data(t) for t in model.graph.initializer):
        raise ExportError(f"{path}: keeps its weights in external data files; a Triton repository copy of one file would lose them")
    problems = contract_problems(str(path), [_spec(v) for v in model.graph.input], [_spec(v) for v in model.graph.output])
    if problems:
        raise ExportError("; ".join(problems))
    meta = read_metadata(model)
    freed = None
    first = {v.name: _dims(v) for v in [*model.graph.input, *model.graph.output]}
    fixed = {n: d[0] for n, d in first.items() if n in (INPUT_NAME, *OUTPUT_NAMES) and d and isinstance(d[0], int) and d[0] > 0}
    if max_batch > 0 and fixed:
        sizes = sorted(set(fixed.values()))
        if sizes != [1]:
            raise ExportError(
                f"{path}: the batch is fixed at {sizes[-1]} ({', '.join(sorted(fixed))}); Triton batching needs a variable "
                "batch: use --max-batch 0"
            )
        try:
            loop = free_batch(model)
            freed = verify_free_batch(model, loop, check_tiles(model))
        except ExportError as exc:
            raise ExportError(
                f"{path}: the batch is fixed at 1 and freeing it here failed ({exc}); re-export with "
                "minescan export --free-batch, or serve it with --max-batch 0"
            ) from exc
        model, data = loop, loop.SerializeToString()
    graph_in = {v.name: v for v in model.graph.input}
    graph_out = {v.name: v for v in model.graph.output}
    image = _tensor(graph_in[INPUT_NAME], max_batch, (-1, -1, -1, 3))
    outputs = tuple(_tensor(graph_out[n], max_batch, _CONTRACT_LAYOUT[n]) for n in OUTPUT_NAMES)
    return data, _Spec(ONNX_PLATFORM, (image,), outputs, meta.labels, freed)


def _plan_spec(path: Path, max_batch: int) -> tuple[bytes, _Spec]:
    from minescan.engine.engine_sidecar import EngineMismatchError, read_sidecar
    from minescan.model.metadata import MetadataError, parse_metadata

    try:
        sidecar = read_sidecar(path)
    except EngineMismatchError as exc:
        raise ExportError(str(exc)) from exc
    data = path.read_bytes()
    import hashlib

    actual = hashlib.sha256(data).hexdigest()
    if actual != sidecar.engine_sha256:
        raise ExportError(
            f"{path}: the file's SHA-256 {actual[:12]}... is not the {sidecar.engine_sha256[:12]}... its sidecar was "
            "written for (engine replaced or sidecar stale); rebuild with minescan build"
        )
    profile = sidecar.profile
    shapes = (profile.min, profile.opt, profile.max)
    if profile.input != INPUT_NAME or any(len(s) != 4 or s[3] != 3 for s in shapes):
        raise ExportError(
            f"{path}: its sidecar's profile is for {profile.input!r} {list(profile.opt)}, not {INPUT_NAME!r} [batch, H, W, 3]"
        )
    try:
        labels = parse_metadata(sidecar.metadata).labels
    except MetadataError as exc:
        raise ExportError(f"{path}: sidecar {exc}") from exc
    low, high = profile.min[0], profile.max[0]
    height, width = (profile.opt[a] if profile.min[a] == profile.max[a] else -1 for a in (1, 2))
    span = f"{low}:{profile.opt[0]}:{high}"
    if max_batch > 0:
        if high == 1:
            raise ExportError(
                f"{path}: the engine takes batch 1 only (profile {span}); Triton batching needs a variable batch: serve it "
                "with --max-batch 0, or serve an ONNX export made with minescan export --free-batch on ONNX Runtime"
            )
        if low > 1:
            raise ExportError(f"{path}: the engine's profile starts at batch {low} ({span}); Triton sends batches from 1: rebuild with --batch 1:...")
        if max_batch > high:
            raise ExportError(f"{path}: the engine's profile allows batches up to {high} ({span}); use --max-batch {high} or less")
        image = TritonTensor(INPUT_NAME, "TYPE_UINT8", (height, width, 3))
        outputs = (
            TritonTensor("detection_boxes", "TYPE_FP32", (-1, 4)),
            TritonTensor("detection_scores", "TYPE_FP32", (-1,)),
            TritonTensor("detection_classes", "TYPE_FP32", (-1,)),
            TritonTensor("num_detections", "TYPE_FP32", (1,), reshape_to_scalar=True),
        )
    else:
        batch = low if low == high else -1
        image = TritonTensor(INPUT_NAME, "TYPE_UINT8", (batch, height, width, 3))
        outputs = (
            TritonTensor("detection_boxes", "TYPE_FP32", (batch, -1, 4)),
            TritonTensor("detection_scores", "TYPE_FP32", (batch, -1)),
            TritonTensor("detection_classes", "TYPE_FP32", (batch, -1)),
            TritonTensor("num_detections", "TYPE_FP32", (batch,)),
        )
    target = sidecar.target
    notes = (
        f"the engine was built with TensorRT {target.tensorrt_version} for {target.gpu_name} (compute capability "
        f"{target.compute_capability}): Triton must run that TensorRT on that GPU model",
        "output types are declared TYPE_FP32 (the sidecar records none); Triton checks them when it loads the engine",
    )
    return data, _Spec(PLAN_PLATFORM, (image,), outputs, labels, notes=notes)


def _tensor(value: Any, max_batch: int, layout: tuple[int, ...]) -> TritonTensor:
    """The config entry of an ONNX graph input/output: Triton's type, dims without the batch when batching."""
    import onnx

    elem = onnx.TensorProto.DataType.Name(value.type.tensor_type.elem_type)
    if elem not in _TRITON_TYPES:
        raise ExportError(f"{value.name!r} has element type {elem}, which Triton has no type for")
    dims = _dims(value)
    if dims is None or len(dims) != len(layout):
        dims = layout  # rank unknown to the graph: the contract's, every size open but the box coordinates
    full = tuple(d if isinstance(d, int) and d > 0 else -1 for d in dims)
    if max_batch == 0:
        return TritonTensor(value.name, _TRITON_TYPES[elem], full)
    rest = full[1:]
    return TritonTensor(value.name, _TRITON_TYPES[elem], rest or (1,), reshape_to_scalar=not rest)


def _spec(value: Any) -> TensorSpec:
    import onnx

    tensor_type = value.type.tensor_type
    try:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name
    except (KeyError, ValueError, TypeError):
        dtype = onnx.TensorProto.DataType.Name(tensor_type.elem_type).lower()
    return TensorSpec(value.name, dtype, _dims(value))


def _dims(value: Any) -> tuple[int | str | None, ...] | None:
    tensor_type = value.type.tensor_type
    if not tensor_type.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor_type.shape.dim)


# --- options, names and text ------------------------------------------------------------------------


def _check_options(
    max_batch: int, instances: int, kind: str | None, preferred: Sequence[int] | None, delay_us: int
) -> None:
    def whole(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    if not whole(max_batch) or max_batch < 0:
        raise ExportError(f"max batch must be a whole number >= 0 (0: no Triton batching), got {max_batch!r}")
    if not whole(instances) or instances < 1:
        raise ExportError(f"instances must be a whole number >= 1, got {instances!r}")
    if kind is not None and kind not in KINDS:
        raise ExportError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if not whole(delay_us) or delay_us < 0:
        raise ExportError(f"max queue delay must be a whole number of microseconds >= 0, got {delay_us!r}")
    if preferred:
        if max_batch == 0:
            raise ExportError("preferred batch sizes need Triton batching; they cannot go with max batch 0")
        bad = [p for p in preferred if not whole(p) or not 1 <= p <= max_batch]
        if bad:
            raise ExportError(f"preferred batch sizes must lie in 1..{max_batch} (the max batch), got {bad[0]!r}")


def _model_name(name: str | None, model_path: Path) -> str:
    if name is None:
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", model_path.stem).lstrip("._-") or "detector"
    if not _NAME.match(name):
        raise ExportError(f"model name {name!r}: use letters, digits, '_', '.' and '-', starting with a letter or digit")
    return name


def _model_config_pb2() -> Any:
    try:
        from tritonclient.grpc import model_config_pb2
    except (ImportError, RuntimeError) as exc:  # tritonclient.grpc raises RuntimeError when grpcio is missing
        raise ExportError(f"writing a Triton config needs tritonclient's ModelConfig protobuf: {INSTALL_HINT}") from exc
    return model_config_pb2


def _labels_text(labels: Mapping[int, str]) -> str:
    return "".join(f"{labels.get(i, f'class_{i}')}\n" for i in range(1, max(labels) + 1))


def _header(model_path: Path, spec: _Spec, with_labels: bool) -> str:
    lines = [
        f"Written by minescan export-triton from {model_path.name}; regenerate rather than edit.",
        "Detector contract (TF Object Detection API): input_tensor uint8 [batch, H, W, 3]; detection_boxes [batch, K, 4]",
        "normalized (ymin, xmin, ymax, xmax); detection_scores, detection_classes [batch, K]; num_detections [batch].",
    ]
    if with_labels:
        lines += [
            "labels.txt beside this file names the classes, line k = class id k (detection_classes holds 1-based ids).",
            "It is not set as label_filename: Triton applies that to classification outputs, which this is not.",
        ]
    if spec.freed is not None:
        lines.append("The graph took batch 1 only; model.onnx runs it once per image in an ONNX Loop (batch freed).")
    return "".join(f"# {line}\n" for line in lines) + "\n"
