"""Export variants: the plain ONNX export turned into a TensorRT-ready and/or FP16/INT8 model.

``minescan export --target {onnx,tensorrt} --precision {fp32,fp16,int8}``
starts from the plain FP32 export (:func:`~minescan.export.convert.export_onnx`)
and applies, in this order:

1. ``--target tensorrt``: :func:`~minescan.export.tensorrt.rewrite_for_tensorrt`
   with a fixed input size (``--input-size``, else the model's own, else the
   scan's default 640 px tile);
2. ``--precision fp16``: :func:`~minescan.export.precision.to_float16`;
   ``--precision int8``: :func:`~minescan.export.quantize.quantize_int8`,
   calibrated on tiles from ``--calibration DIR``
   (:func:`~minescan.export.calibration.calibration_tiles`) or, without it,
   on synthetic tiles (the report says so: scales measured on synthetic
   tiles are a stand-in, not a calibration).

The written file keeps the plain export's ``minescan.*`` metadata (with the
fixed input size) and adds ``minescan.build``: a JSON object with the
target, precision, input size and calibration source.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx

from minescan.export.onnx_metadata import read_metadata, write_metadata
from minescan.results.atomic import write_atomically
from minescan.export.calibration import calibration_tiles, tiles_for
from minescan.export.detections import open_session, synthetic_tiles
from minescan.export.errors import ExportError
from minescan.export.precision import Float16Report, to_float16
from minescan.export.quantize import quantize_int8

if TYPE_CHECKING:
    from minescan.export.tensorrt import RewriteReport

from minescan.export.choices import DEFAULT_INPUT_SIZE, PRECISIONS, TARGETS  # noqa: E402,F401 - re-exported
CALIBRATION_TILES = 16


@dataclass(frozen=True)
class VariantReport:
    """What :func:`build_variant` wrote."""

    path: Path
    target: str
    precision: str
    input_size: tuple[int, int] | None
    rewrite: "RewriteReport | None"  # --target tensorrt only
    float16: Float16Report | None  # --precision fp16 only
    calibration: str  # where INT8 scales came from ("" unless int8)
    qdq_nodes: int
    size_bytes: int

    def format(self) -> str:
        """A few readable lines."""
        size = "any" if self.input_size is None else "{}x{}".format(*self.input_size)
        lines = [f"wrote {self.path} ({self.size_bytes / 1e6:.1f} MB): target {self.target}, {self.precision}, input {size}"]
        if self.rewrite:
            lines.append(self.rewrite.format())
        if self.float16:
            lines.append(self.float16.format())
        if self.precision == "int8":
            lines.append(f"int8: {self.qdq_nodes} QuantizeLinear/DequantizeLinear nodes, calibrated on {self.calibration}")
        return "\n".join(lines)


@dataclass(frozen=True)
class Variant:
    """A built variant: its report and the FP32 model of the same target (the reference for --verify)."""

    report: VariantReport
    fp32_model: bytes


def build_variant(
    plain_onnx: str | Path,
    out_path: str | Path,
    *,
    target: str = "onnx",
    precision: str = "fp32",
    calibration: str | Path | None = None,
    input_size: int | None = None,
    fp32_tail: int = 0,
) -> Variant:
    """Turn the plain export at ``plain_onnx`` into the ``target``/``precision`` variant at ``out_path``.

    ``fp32_tail``: INT8 keeps that many quantizable ops nearest the outputs in FP32 (see :mod:`minescan.export.quantize`).
    """
    check_options(target, precision, calibration)
    # onnx-graphsurgeon (the export extra) is imported only here, so the CLI loads without it.
    from minescan.export.tensorrt import fix_input_size, rewrite_for_tensorrt

    model = onnx.load(str(plain_onnx))
    size = _input_size(model, target, input_size)
    rewrite = None
    if target == "tensorrt":
        model, rewrite = rewrite_for_tensorrt(model, input_size=size)
    elif size is not None:
        fix_input_size(model, size)
    fp32_model = model.SerializeToString()

    float16, source = None, ""
    if precision == "fp16":
        model, float16 = to_float16(model)
    elif precision == "int8":
        tiles, source = _calibration(model, calibration, size)
        model = quantize_int8(model, tiles, symmetric_activations=target == "tensorrt", fp32_tail=fp32_tail)

    build = {"target": target, "precision": precision, "input_size": list(size) if size else None, "calibration": source or None}
    if precision == "int8" and fp32_tail:
        build["fp32_tail"] = fp32_tail
    # A proposal budget (minescan.export.proposals) is part of the graph the variant is built from: keep saying so.
    build.update({k: v for k, v in read_metadata(model).build.items() if k in ("max_proposals", "proposals_configured")})
    metadata = dataclasses.replace(read_metadata(model), input_size=size or read_metadata(model).input_size, build=build)
    write_metadata(model, metadata)
    data = model.SerializeToString()
    open_session(data)  # whatever is written must load in ONNX Runtime
    out_path = Path(out_path)
    written = write_atomically(out_path, data)
    report = VariantReport(
        path=out_path,
        target=target,
        precision=precision,
        input_size=size,
        rewrite=rewrite,
        float16=float16,
        calibration=source,
        qdq_nodes=sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node),
        size_bytes=written,
    )
    return Variant(report, fp32_model)


def check_options(target: str, precision: str, calibration: str | Path | None) -> None:
    """Raise an ExportError naming the first option that cannot be built."""
    if target not in TARGETS:
        raise ExportError(f"unknown target {target!r}; choose from {', '.join(TARGETS)}")
    if precision not in PRECISIONS:
        raise ExportError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    if calibration is not None and not Path(calibration).is_dir():
        raise ExportError(f"calibration folder {calibration}: not found")


def _input_size(model: onnx.ModelProto, target: str, requested: int | None) -> tuple[int, int] | None:
    """The square input size to fix: requested, else the model's own, else the default for TensorRT."""
    if requested is not None:
        if requested < 16:
            raise ExportError(f"input size must be at least 16 px, got {requested}")
        return requested, requested
    dims = model.graph.input[0].type.tensor_type.shape.dim
    if dims[1].HasField("dim_value") and dims[2].HasField("dim_value"):
        return dims[1].dim_value, dims[2].dim_value
    return (DEFAULT_INPUT_SIZE, DEFAULT_INPUT_SIZE) if target == "tensorrt" else None


def _calibration(model: onnx.ModelProto, directory: str | Path | None, size: tuple[int, int] | None) -> tuple[np.ndarray, str]:
    """The INT8 calibration tiles and a line saying where they came from."""
    tile_size = size or (DEFAULT_INPUT_SIZE, DEFAULT_INPUT_SIZE)
    if directory is None:
        tiles = synthetic_tiles(tiles_for(CALIBRATION_TILES, tile_size[0]), tile_size, seed=1)
        return tiles, f"{len(tiles)} synthetic tiles (no --calibration given; pass scenes for real scales)"
    tiles = calibration_tiles(directory, tile_size, read_metadata(model).recipe,
                              count=tiles_for(CALIBRATION_TILES, tile_size[0]))
    return tiles, f"{len(tiles)} tiles from the scenes in {directory}"


