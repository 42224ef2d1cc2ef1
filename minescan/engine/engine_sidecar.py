"""The sidecar JSON that vouches for a TensorRT engine file.

A serialized TensorRT engine runs only under the TensorRT version that built it
and only on the GPU model it was tuned for; loaded elsewhere it fails with an
opaque error or, across GPUs of one compute capability, runs untuned.  It also
carries none of the model's ``minescan.*`` metadata (labels, recipe).
``minescan build`` therefore writes ``<engine>.json`` beside the engine (whose
name ends in one of :data:`~minescan.engine.backends.ENGINE_SUFFIXES`,
``.engine``, ``.plan`` or ``.trt``: ``model.trt`` -> ``model.trt.json``):

- ``engine_sha256``: the engine file's hash, so a sidecar is never paired
  with another engine (a rebuild that kept an old sidecar, a copied file);
- ``tensorrt_version``, ``gpu_name``, ``compute_capability``: what built it;
- ``onnx_sha256``, ``profile``: the source model and the optimization profile
  of the input (min/opt/max shapes), with the reason for the batch range;
- ``metadata``: the ONNX model's ``minescan.*`` entries, verbatim.

:func:`check_engine` compares a sidecar with the engine file and the machine
about to run it, and refuses a stale or foreign engine in one line that names
the mismatch.  Everything here is plain Python, so it is tested without
TensorRT or a GPU.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping

from minescan.errors import MinescanError

SIDECAR_FORMAT = "minescan-tensorrt-engine/1"
REBUILD = "rebuild with minescan build"


class EngineMismatchError(MinescanError):
    """An engine file whose sidecar is missing, or that was built for another TensorRT, GPU or file."""


@dataclass(frozen=True)
class Profile:
    """The input's optimization profile: min, opt and max shapes of ``input``, and why the batch range."""

    input: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]
    note: str = ""


@dataclass(frozen=True)
class BuildTarget:
    """What an engine is tied to: the TensorRT version and the GPU model."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str


@dataclass(frozen=True)
class EngineSidecar:
    """The contents of ``<engine>.json``."""

    engine_sha256: str
    target: BuildTarget
    onnx_sha256: str
    profile: Profile
    metadata: Mapping[str, str] = field(default_factory=dict)
    format: str = SIDECAR_FORMAT

    def to_json(self) -> str:
        """The sidecar as JSON text."""
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str) -> "EngineSidecar":
        """Parse sidecar JSON; raise :class:`EngineMismatchError` naming ``source`` when it is not one."""
        try:
            raw = json.loads(text)
            if raw.get("format") != SIDECAR_FORMAT:
                raise EngineMismatchError(f"{source}: format {raw.get('format')!r} is not {SIDECAR_FORMAT!r}; {REBUILD}")
            profile = raw["profile"]
            return cls(
                engine_sha256=str(raw["engine_sha256"]),
                target=BuildTarget(**raw["target"]),
                onnx_sha256=str(raw["onnx_sha256"]),
                profile=Profile(
                    input=str(profile["input"]),
                    min=tuple(profile["min"]),
                    opt=tuple(profile["opt"]),
                    max=tuple(profile["max"]),
                    note=str(profile.get("note", "")),
                ),
                metadata={str(k): str(v) for k, v in raw.get("metadata", {}).items()},
            )
        except (json.JSONDecodeError, AttributeError, KeyError, TypeError) as exc:
            raise EngineMismatchError(f"{source}: not a minescan engine sidecar ({type(exc).__name__}: {exc}); {REBUILD}") from exc


def sidecar_path(engine_path: str | Path) -> Path:
    """Where the sidecar of ``engine_path`` lives: ``model.engine`` -> ``model.engine.json``."""
    path = Path(engine_path)
    return path.with_name(path.name + ".json")


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_sidecar(engine_path: str | Path) -> EngineSidecar:
    """The sidecar of ``engine_path``; raise :class:`EngineMismatchError` when it is missing or unreadable."""
    path = sidecar_path(engine_path)
    if not path.is_file():
        raise EngineMismatchError(f"{engine_path}: no sidecar {path.name} beside it, so its origin is unknown; {REBUILD}")
    return EngineSidecar.from_json(path.read_text(), str(path))


def check_engine(engine_path: str | Path, sidecar: EngineSidecar, here: BuildTarget) -> None:
    """Refuse ``engine_path`` unless it is the file ``sidecar`` describes and ``here`` is what built it."""
    actual = sha256_file(engine_path)
    if actual != sidecar.engine_sha256:
        raise EngineMismatchError(
            f"{engine_path}: the file's SHA-256 {actual[:12]}... is not the {sidecar.engine_sha256[:12]}... "
            f"its sidecar was written for (engine replaced or sidecar stale); {REBUILD}"
        )
    built = sidecar.target
    for what, then, now in (
        ("TensorRT", built.tensorrt_version, here.tensorrt_version),
        ("GPU", built.gpu_name, here.gpu_name),
        ("compute capability", built.compute_capability, here.compute_capability),
    ):
        if then != now:
            raise EngineMismatchError(f"{engine_path}: built with {what} {then}, this machine has {what} {now}; {REBUILD}")

