"""Running a detector on tiles: the TF SavedModel or an ONNX model, to one detection set.

Parity checks compare what two models detect on the same uint8 tiles.  This
module does the running part and nothing else: :func:`run_saved_model` calls
the SavedModel's ``serving_default`` signature (the reference),
:func:`run_onnx` runs an ONNX file with ONNX Runtime (FP32, FP16 or INT8
alike), and both return a :class:`~minescan.model.detections.BatchDetections`
in the contract's layout.  The tiles come from the caller or from
:func:`synthetic_tiles`, seeded textured images that avoid the flat areas
whose exactly tied scores make TF and ONNX Runtime break NMS ties differently.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import onnxruntime as ort

from minescan.model.contract import INPUT_NAME, OUTPUT_NAMES
from minescan.model.detections import BatchDetections
from minescan.export.errors import ExportError
from minescan.export.saved_model import load_serving_signature

CPU = ("CPUExecutionProvider",)


def synthetic_tiles(count: int = 4, size: tuple[int, int] = (256, 256), seed: int = 0) -> np.ndarray:
    """``count`` seeded uint8 RGB tiles [count, H, W, 3]: smooth terrain, bright patches and pixel noise."""
    rng = np.random.default_rng(seed)
    height, width = size
    coarse = rng.uniform(40, 200, (count, height // 16 + 2, width // 16 + 2, 3))
    # Nearest-neighbour upsampling of a coarse field, then a box blur, gives terrain-like gradients.
    terrain = np.repeat(np.repeat(coarse, 16, axis=1), 16, axis=2)[:, :height, :width]
    terrain = (terrain + np.roll(terrain, 8, axis=1) + np.roll(terrain, 8, axis=2) + np.roll(terrain, 8, axis=(1, 2))) / 4
    for tile in terrain:
        for _ in range(rng.integers(2, 6)):
            y, x = rng.integers(0, height - 8), rng.integers(0, width - 8)
            h, w = rng.integers(8, max(9, height // 4)), rng.integers(8, max(9, width // 4))
            tile[y : y + h, x : x + w] = rng.uniform(150, 255, 3)
    noisy = terrain + rng.normal(0, 12, terrain.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def run_saved_model(saved_model_dir: str | Path, tiles: np.ndarray) -> BatchDetections:
    """Detections of the SavedModel's ``serving_default`` signature, one tile per call (the OD API's batch of 1)."""
    tiles = _check_tiles(tiles)
    signature = load_serving_signature(saved_model_dir)
    parts = []
    for tile in tiles:
        outputs = signature.function(**{INPUT_NAME: tile[np.newaxis]})
        parts.append(BatchDetections.from_outputs({name: outputs[name].numpy() for name in OUTPUT_NAMES}))
    return BatchDetections.concatenate(parts)


def run_onnx(
    model: str | Path | bytes | ort.InferenceSession,
    tiles: np.ndarray,
    *,
    batch_size: int = 1,
    providers: Sequence[str] = CPU,
) -> BatchDetections:
    """Detections of an ONNX model (a path, serialized bytes or an open session), ``batch_size`` tiles per call."""
    tiles = _check_tiles(tiles)
    session = model if isinstance(model, ort.InferenceSession) else open_session(model, providers)
    missing = [name for name in OUTPUT_NAMES if name not in {o.name for o in session.get_outputs()}]
    if missing:
        raise ExportError(f"ONNX model has no output {missing[0]!r} (outputs: {[o.name for o in session.get_outputs()]})")
    parts = []
    for start in range(0, len(tiles), batch_size):
        values = session.run(list(OUTPUT_NAMES), {INPUT_NAME: tiles[start : start + batch_size]})
        parts.append(BatchDetections.from_outputs(dict(zip(OUTPUT_NAMES, values))))
    return BatchDetections.concatenate(parts)


def open_session(model: str | Path | bytes, providers: Sequence[str] = CPU) -> ort.InferenceSession:
    """An ONNX Runtime session on ``model``; a model ONNX Runtime rejects becomes an ExportError."""
    source = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(source, providers=list(providers))
    except Exception as exc:  # ONNX Runtime raises its own Fail/InvalidGraph/NotImplemented types
        where = "the converted model" if isinstance(model, bytes) else str(model)
        raise ExportError(f"ONNX Runtime cannot load {where}: {str(exc).strip().splitlines()[0]}") from exc


def _check_tiles(tiles: np.ndarray) -> np.ndarray:
    tiles = np.asarray(tiles)
    if tiles.dtype != np.uint8 or tiles.ndim != 4 or tiles.shape[3] != 3 or len(tiles) == 0:
        raise ExportError(f"tiles must be uint8 [N>0, H, W, 3], got {tiles.dtype} {list(tiles.shape)}")
    return tiles
