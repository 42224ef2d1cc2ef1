"""A TF SavedModel's ``serving_default`` signature, loaded and checked against the contract.

Both conversion and verification start here: the directory must hold a
SavedModel TensorFlow can load, with a ``serving_default`` signature whose
input and outputs meet :mod:`minescan.model.contract` (its strict mode).  Each fault is raised
as an :class:`ExportError` naming the directory and the offending tensor.
The source digest covers exactly the files that define the model (graph and
variables), so re-exporting an unchanged SavedModel gives the same digest.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from minescan.export._tensorflow import import_optional
from minescan.model.contract import INPUT_NAME, TensorSpec, contract_problems
from minescan.export.errors import ExportError

SIGNATURE = "serving_default"
_GRAPH_FILES = ("saved_model.pb", "saved_model.pbtxt")


@dataclass(frozen=True)
class ServingSignature:
    """A loaded ``serving_default`` function and its input spec.

    ``module`` is the loaded SavedModel object; it owns the variables the
    function reads, so it is kept alive alongside it.
    """

    module: Any
    function: Any  # tf ConcreteFunction taking input_tensor=..., returning a dict of outputs
    input_spec: Any  # tf.TensorSpec of input_tensor


def saved_model_graph(saved_model_dir: str | Path) -> Path:
    """The graph file of the SavedModel in ``saved_model_dir``, or an ExportError saying what is missing."""
    directory = Path(saved_model_dir)
    if not directory.is_dir():
        raise ExportError(f"SavedModel directory {directory} does not exist")
    for name in _GRAPH_FILES:
        if (directory / name).is_file():
            return directory / name
    raise ExportError(f"{directory} is not a SavedModel directory: no {' or '.join(_GRAPH_FILES)}")


def load_serving_signature(saved_model_dir: str | Path) -> ServingSignature:
    """Load ``saved_model_dir`` and return its contract-checked ``serving_default`` signature."""
    saved_model_graph(saved_model_dir)
    tf = import_optional("tensorflow")
    directory = Path(saved_model_dir)
    try:
        module = tf.saved_model.load(str(directory))
    except Exception as exc:  # TF reports unreadable SavedModels with many exception types
        raise ExportError(f"cannot load SavedModel {directory}: {type(exc).__name__}: {_first_line(exc)}") from exc
    signatures = dict(module.signatures)
    if SIGNATURE not in signatures:
        found = ", ".join(sorted(signatures)) or "none"
        raise ExportError(f"SavedModel {directory} has no {SIGNATURE!r} signature (signatures: {found})")
    function = signatures[SIGNATURE]
    input_specs = function.structured_input_signature[1]
    inputs = [_spec(name, s.dtype, s.shape) for name, s in input_specs.items()]
    outputs = [_spec(name, t.dtype, t.shape) for name, t in function.structured_outputs.items()]
    problems = contract_problems(f"SavedModel {directory} signature {SIGNATURE!r}", inputs, outputs, strict=True)
    if problems:
        raise ExportError("; ".join(problems))
    return ServingSignature(module, function, input_specs[INPUT_NAME])


def saved_model_sha256(saved_model_dir: str | Path) -> str:
    """SHA-256 over the SavedModel's graph file and variables, each preceded by its relative path."""
    directory = Path(saved_model_dir)
    files = [saved_model_graph(directory), *sorted(p for p in (directory / "variables").glob("*") if p.is_file())]
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(directory).as_posix().encode() + b"\0")
        with path.open("rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _spec(name: str, dtype: Any, shape: Any) -> TensorSpec:
    return TensorSpec(name, dtype.name, None if shape.rank is None else tuple(shape.as_list()))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no details"
