"""The Open Inference Protocol (KServe v2) over HTTP/REST: parsing requests, encoding answers.

Pure functions on bytes and numpy arrays, no web framework, so every rule is
tested without a server.  What is understood (the spec:
https://kserve.github.io/website/latest/modelserving/data_plane/v2_protocol/ and
Triton's binary tensor data extension):

- an infer request is a JSON object ``{"id"?, "parameters"?, "inputs": [...],
  "outputs"?: [...]}``; each input has ``name``, ``shape``, ``datatype`` and
  either ``data`` (row-major, flat or nested) or, with the binary extension,
  ``parameters.binary_data_size``: its raw little-endian bytes follow the JSON
  in the body, in input order, and the header ``Inference-Header-Content-Length``
  gives the JSON's length;
- outputs are answered as JSON ``data`` unless the request asks for binary
  (``parameters.binary_data_output`` for all, or ``binary_data`` per requested
  output); binary outputs carry ``parameters.binary_data_size`` and their bytes
  follow the JSON, whose length the answer's ``Inference-Header-Content-Length``
  gives.

Invariants: nothing is allocated from a size a client claims before it is
checked against :class:`Limits` (a 100 GB shape is refused by arithmetic); a
body shorter or longer than what its header and binary sizes add up to is
refused; every refusal is a :class:`ProtocolError` with an HTTP 4xx status and a
one-line message naming the field.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from minescan.errors import MinescanError
from minescan.model.contract import INPUT_NAME, OUTPUT_NAMES

HEADER_LENGTH = "inference-header-content-length"

# KServe v2 datatypes and their numpy types.
DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(bool), "UINT8": np.dtype(np.uint8), "UINT16": np.dtype(np.uint16), "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64), "INT8": np.dtype(np.int8), "INT16": np.dtype(np.int16), "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64), "FP16": np.dtype(np.float16), "FP32": np.dtype(np.float32), "FP64": np.dtype(np.float64),
}
NAMES = {dtype: name for name, dtype in DATATYPES.items()}


class ProtocolError(MinescanError):
    """A request the protocol cannot take; ``status`` is the HTTP status to answer (4xx)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    """What one request may claim: body bytes, tiles per request, and a tile's side in px."""

    max_body: int
    max_tiles: int
    max_side: int


@dataclass(frozen=True)
class InferRequest:
    """A parsed infer request: the id, the image batch uint8 [N, H, W, 3], the outputs wanted and which in binary."""

    id: str | None
    tiles: np.ndarray
    outputs: tuple[str, ...]
    binary: frozenset[str]


def _object(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise ProtocolError(f"{where} must be a JSON object")
    return value


def _shape(raw: Any, limits: Limits) -> tuple[int, ...]:
    if not (isinstance(raw, list) and len(raw) == 4 and all(isinstance(d, int) and not isinstance(d, bool) for d in raw)):
        raise ProtocolError(f"input {INPUT_NAME!r}: shape must be [N, H, W, 3] whole numbers, got {json.dumps(raw)[:80]}")
    n, h, w, c = raw
    if c != 3 or min(n, h, w) < 1:
        raise ProtocolError(f"input {INPUT_NAME!r}: shape must be [N, H, W, 3] with N, H, W >= 1, got {raw}")
    if n > limits.max_tiles:
        raise ProtocolError(f"input {INPUT_NAME!r}: {n} tiles in one request, at most {limits.max_tiles}", 413)
    if max(h, w) > limits.max_side:
        raise ProtocolError(f"input {INPUT_NAME!r}: tiles of {h}x{w} px, at most {limits.max_side} px a side", 413)
    if n * h * w * c > limits.max_body:
        raise ProtocolError(f"input {INPUT_NAME!r}: shape {raw} is {n * h * w * c} bytes, over the {limits.max_body} byte limit", 413)
    return (n, h, w, c)


def _flatten(data: Any, count: int) -> np.ndarray:
    """JSON ``data`` (flat or nested lists of integers) as uint8 [count]; refuses anything else."""
    flat: list = []
    stack = [data]
    while stack:  # iterative: nesting depth cannot exhaust the recursion limit
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        else:
            flat.append(item)
            if len(flat) > count:
                raise ProtocolError(f"input {INPUT_NAME!r}: data holds more values than the shape's {count}")
    if len(flat) != count:
        raise ProtocolError(f"input {INPUT_NAME!r}: data holds {len(flat)} values, the shape needs {count}")
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in flat):
        raise ProtocolError(f"input {INPUT_NAME!r}: UINT8 data must be integers 0-255")
    return np.asarray(flat, np.uint8)


def parse_infer(body: bytes, header_length: str | None, limits: Limits, *, model_outputs: Sequence[str] = OUTPUT_NAMES) -> InferRequest:
    """The request in ``body`` (see the module docstring); ``header_length`` is the header's value, if sent."""
    if len(body) > limits.max_body:
        raise ProtocolError(f"request body of {len(body)} bytes, over the {limits.max_body} byte limit", 413)
    if header_length is not None:
        try:
            json_length = int(header_length)
        except ValueError:
            raise ProtocolError(f"Inference-Header-Content-Length must be a whole number, got {header_length[:40]!r}") from None
        if not 0 < json_length <= len(body):
            raise ProtocolError(f"Inference-Header-Content-Length {json_length} does not fit a body of {len(body)} bytes")
    else:
        json_length = len(body)
    try:
        request = json.loads(body[:json_length])
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ProtocolError("the request is not valid JSON") from None
    request = _object(request, "the request")
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1:
        raise ProtocolError(f"'inputs' must be a list with the one input {INPUT_NAME!r}")
    spec = _object(inputs[0], "an input")
    if spec.get("name") != INPUT_NAME:
        raise ProtocolError(f"unknown input {str(spec.get('name'))[:60]!r}; the model takes {INPUT_NAME!r}")
    if spec.get("datatype") != "UINT8":
        raise ProtocolError(f"input {INPUT_NAME!r}: datatype must be UINT8, got {str(spec.get('datatype'))[:20]!r}")
    shape = _shape(spec.get("shape"), limits)
    count = math.prod(shape)
    parameters = _object(spec.get("parameters", {}), f"input {INPUT_NAME!r} parameters")
    binary_size = parameters.get("binary_data_size")
    tail = body[json_length:]
    if binary_size is not None:
        if not isinstance(binary_size, int) or isinstance(binary_size, bool) or binary_size != count:
            raise ProtocolError(f"input {INPUT_NAME!r}: binary_data_size {binary_size!r} does not match the shape's {count} bytes")
        if len(tail) != binary_size:
            raise ProtocolError(f"input {INPUT_NAME!r}: {len(tail)} binary bytes follow the JSON, binary_data_size says {binary_size}")
        values = np.frombuffer(tail, np.uint8)
    else:
        if tail:
            raise ProtocolError(f"{len(tail)} bytes follow the JSON but no input declares binary_data_size")
        if "data" not in spec:
            raise ProtocolError(f"input {INPUT_NAME!r}: give 'data' or parameters.binary_data_size")
        values = _flatten(spec["data"], count)
    tiles = values.reshape(shape)
    wanted, binary = _outputs(request, model_outputs)
    request_id = request.get("id")
    return InferRequest(None if request_id is None else str(request_id)[:256], tiles, wanted, binary)


def _outputs(request: dict, model_outputs: Sequence[str]) -> tuple[tuple[str, ...], frozenset[str]]:
    parameters = _object(request.get("parameters", {}), "the request's parameters")
    all_binary = parameters.get("binary_data_output") is True
    raw = request.get("outputs")
    if raw is None:
        return tuple(model_outputs), frozenset(model_outputs if all_binary else ())
    if not isinstance(raw, list) or not raw:
        raise ProtocolError("'outputs' must be a non-empty list of {\"name\": ...}")
    names, binary = [], set()
    for item in raw:
        item = _object(item, "a requested output")
        name = item.get("name")
        if name not in model_outputs:
            raise ProtocolError(f"unknown output {str(name)[:60]!r}; the model has {', '.join(model_outputs)}")
        names.append(name)
        flag = _object(item.get("parameters", {}), f"output {name!r} parameters").get("binary_data", all_binary)
        if flag is True:
            binary.add(name)
    return tuple(names), frozenset(binary)


def encode_infer(model: str, request: InferRequest, outputs: Mapping[str, np.ndarray]) -> tuple[bytes, dict[str, str]]:
    """The answer's body and extra headers: JSON, then the binary outputs' bytes in order."""
    described, blobs = [], []
    for name in request.outputs:
        array = np.ascontiguousarray(outputs[name])
        entry: dict[str, Any] = {"name": name, "datatype": NAMES[array.dtype], "shape": list(array.shape)}
        if name in request.binary:
            data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
            entry["parameters"] = {"binary_data_size": len(data)}
            blobs.append(data)
        else:
            entry["data"] = array.ravel().tolist()
        described.append(entry)
    answer: dict[str, Any] = {"model_name": model, "model_version": "1", "outputs": described}
    if request.id is not None:
        answer["id"] = request.id
    head = json.dumps(answer, separators=(",", ":")).encode()
    if not blobs:
        return head, {"content-type": "application/json"}
    return head + b"".join(blobs), {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(head))}


def model_metadata(name: str, signature: Any, output_types: Mapping[str, np.dtype]) -> dict[str, Any]:
    """``GET /v2/models/{name}``: the contract's input and the four outputs with the model's own types."""
    h, w = signature.height or -1, signature.width or -1
    shapes = {"detection_boxes": [-1, -1, 4], "detection_scores": [-1, -1], "detection_classes": [-1, -1], "num_detections": [-1]}
    return {
        "name": name, "versions": ["1"], "platform": "minescan_onnxruntime",
        "inputs": [{"name": INPUT_NAME, "datatype": "UINT8", "shape": [-1, h, w, 3]}],
        "outputs": [{"name": n, "datatype": NAMES[np.dtype(output_types[n])], "shape": shapes[n]} for n in OUTPUT_NAMES],
    }
