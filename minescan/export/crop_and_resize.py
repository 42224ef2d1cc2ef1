"""tf2onnx's Loop-based ``crop_and_resize`` rewritten as one ``RoiAlign``, with TF's semantics.

tf2onnx (opset >= 11) turns ``tf.image.crop_and_resize`` into a ``Loop`` over
the boxes whose body slices one image and calls ``Resize`` with the
``tf_crop_and_resize`` coordinate mode.  TensorRT's parser supports neither
that mode nor a Loop whose scan output has a data-dependent length, but it
parses ``RoiAlign``.

The mapping.  For a box (y1, x1, y2, x2) on an H x W map and a crop of
``c`` rows, TF samples row i (0 <= i < c) bilinearly at

    y_i = y1 * (H - 1) + i * s,    s = (y2 - y1) * (H - 1) / (c - 1)

(for c = 1: y_0 = (y1 + y2) / 2 * (H - 1), s = 0), and writes the
extrapolation value wherever y_i < 0 or y_i > H - 1; columns likewise.
``RoiAlign`` with ``sampling_ratio=1`` averages one sample per bin, taken at
the bin centre ``start + (i + 0.5) * bin``; in ``half_pixel`` mode
``start = roi_y1 - 0.5`` and ``bin = (roi_y2 - roi_y1) / c`` with no minimum
roi size (``output_half_pixel`` would force rois to at least 1 px).  So
``roi_y1 = y1 * (H - 1) - s / 2 + 0.5`` and ``roi_y2 = roi_y1 + c * s`` put
RoiAlign's samples exactly on TF's.  Inside [0, H - 1] both interpolate the
same four neighbours; outside it RoiAlign clamps (up to one pixel) or
returns 0, so a mask computed with TF's own float arithmetic (the same
products and sums in the same order) selects the extrapolation value where
TF does.  The result equals TF's crop up to float rounding of the
interpolation weights (~1e-7 relative), edge boxes included.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from minescan.export.errors import ExportError

CROP_MODE = "tf_crop_and_resize"


@dataclass(frozen=True)
class _CropLoop:
    """What a tf2onnx crop_and_resize Loop computes: crops of ``image`` at ``boxes``."""

    loop: gs.Node
    image: gs.Tensor  # [N, C, H, W] or [N, H, W, C]
    channels_last: bool
    boxes: gs.Tensor  # [R, 4] normalized (y1, x1, y2, x2)
    box_indices: gs.Tensor  # [R] int
    crop_size: tuple[int, int]
    extrapolation_value: float
    output_perm: tuple[int, ...] | None  # transpose of each [1, C, h, w] crop before stacking


def replace_crop_and_resize_loops(graph: gs.Graph) -> int:
    """Replace every tf2onnx crop_and_resize Loop in ``graph`` by RoiAlign; return how many.

    Loops that are not crop_and_resize are left alone.  The graph needs opset
    16 or later (RoiAlign's ``coordinate_transformation_mode``); call
    ``graph.cleanup()`` afterwards to drop the dead Loops.
    """
    crops = [crop for crop in map(_match, graph.nodes) if crop is not None]
    if crops and graph.opset < 16:
        raise ExportError(f"replacing crop_and_resize by RoiAlign needs opset 16 or later, the model has {graph.opset}")
    for crop in crops:
        _replace(graph, crop)
    return len(crops)


def _producer(tensor: gs.Tensor) -> gs.Node | None:
    return tensor.inputs[0] if tensor.inputs else None


def _const(tensor: gs.Tensor) -> np.ndarray | None:
    if isinstance(tensor, gs.Constant):
        return tensor.values
    node = _producer(tensor)
    return node.attrs["value"].values if node is not None and node.op == "Constant" else None


def _sliced_outer_tensor(tensor: gs.Tensor, body: gs.Graph) -> gs.Tensor:
    """The outer-scope tensor a body tensor was sliced from (following Reshape/Squeeze/Transpose)."""
    node = _producer(tensor)
    while node is not None and node.op in ("Reshape", "Squeeze", "Transpose", "Cast"):
        node = _producer(node.inputs[0])
    source = _producer(node.inputs[0]) if node is not None else None
    if node is None or node.op != "Slice" or any(source is inner for inner in body.nodes):
        raise _unrecognized(body, f"expected a Slice of an outer tensor, found {node.op if node else 'a graph input'}")
    return node.inputs[0]


def _unrecognized(body: gs.Graph, why: str) -> ExportError:
    return ExportError(f"Loop body {body.name!r} uses Resize({CROP_MODE}) but is not tf2onnx's crop_and_resize: {why}")


def _match(node: gs.Node) -> _CropLoop | None:
    if node.op != "Loop":
        return None
    body: gs.Graph = node.attrs["body"]
    resizes = [n for n in body.nodes if n.op == "Resize" and n.attrs.get("coordinate_transformation_mode") == CROP_MODE]
    if not resizes:
        return None
    if len(resizes) != 1 or len(node.outputs) != 1:
        raise _unrecognized(body, f"{len(resizes)} crop Resize nodes and {len(node.outputs)} Loop outputs, expected 1 and 1")
    resize = resizes[0]
    if resize.attrs.get("mode") != "linear":
        raise _unrecognized(body, f"Resize mode {resize.attrs.get('mode')!r}; only bilinear crops are rewritten")

    # The image: Slice(image, box_index) [-> Transpose NHWC->NCHW] -> Resize.
    source = _producer(resize.inputs[0])
    channels_last = source is not None and source.op == "Transpose"
    if channels_last and tuple(source.attrs["perm"]) != (0, 3, 1, 2):
        raise _unrecognized(body, f"image transpose {source.attrs['perm']}")
    image_slice = _producer(source.inputs[0]) if channels_last else source
    if image_slice is None or image_slice.op != "Slice":
        raise _unrecognized(body, "the resized image is not a Slice of the feature map")
    image = image_slice.inputs[0]
    box_indices = _sliced_outer_tensor(image_slice.inputs[1], body)
    boxes = _sliced_outer_tensor(_roi_source(resize, body), body)

    sizes = _producer(resize.inputs[3])
    crop = _const(sizes.inputs[-1]) if sizes is not None and sizes.op == "Concat" else None
    if crop is None or crop.size != 2:
        raise _unrecognized(body, "the crop size is not a constant [height, width]")

    # The scan output: Resize [-> Transpose] -> Squeeze(axis 0) -> body output.
    after = resize.outputs[0].outputs
    perm = None
    if len(after) == 1 and after[0].op == "Transpose":
        perm = tuple(int(p) for p in after[0].attrs["perm"])
        after = after[0].outputs[0].outputs
    if perm is not None and perm[0] != 0:
        raise _unrecognized(body, f"crop transpose {perm} moves the box axis")
    if len(after) != 1 or after[0].op != "Squeeze" or after[0].outputs[0] is not body.outputs[-1]:
        raise _unrecognized(body, "the crop is not squeezed into the Loop's scan output")
    return _CropLoop(
        loop=node,
        image=image,
        channels_last=channels_last,
        boxes=boxes,
        box_indices=box_indices,
        crop_size=(int(crop[0]), int(crop[1])),
        extrapolation_value=float(resize.attrs.get("extrapolation_value", 0.0)),
        output_perm=perm,
    )


def _roi_source(resize: gs.Node, body: gs.Graph) -> gs.Tensor:
    """The box slice feeding the Resize roi input (Concat of [0, 0, y1, x1] and [1, 1, y2, x2])."""
    pending = [resize.inputs[1]]
    while pending:
        node = _producer(pending.pop())
        if node is None:
            continue
        if node.op == "Reshape":
            return node.outputs[0]
        pending.extend(node.inputs[:1] if node.op == "Slice" else node.inputs)
    raise _unrecognized(body, "no box Reshape feeds the Resize roi")


class _Builder:
    """Adds nodes with unique names to a graph."""

    def __init__(self, graph: gs.Graph, prefix: str) -> None:
        self.graph, self.prefix, self.count = graph, prefix, 0

    def const(self, values: np.ndarray) -> gs.Constant:
        self.count += 1
        return gs.Constant(f"{self.prefix}/const_{self.count}", np.asarray(values))

    def op(self, op: str, *inputs: gs.Tensor, **attrs: object) -> gs.Variable:
        self.count += 1
        (out,) = self.graph.layer(op=op, name=f"{self.prefix}/{op}_{self.count}", inputs=list(inputs),
                                  outputs=[f"{self.prefix}/{op}_{self.count}:0"], attrs=attrs)
        return out


def _axis_samples(b: _Builder, start: gs.Tensor, end: gs.Tensor, extent: gs.Tensor, crop: int) -> tuple[gs.Tensor, gs.Tensor, gs.Tensor]:
    """RoiAlign roi start and end [R, 1] and TF's in-range mask [R, crop] along one axis.

    ``start``/``end`` are the box's normalized coordinates [R, 1], ``extent``
    the axis length minus 1 (float scalar).
    """
    if crop > 1:
        spacing = b.op("Div", b.op("Mul", b.op("Sub", end, start), extent), b.const(np.float32(crop - 1)))
        first = b.op("Mul", start, extent)
    else:
        spacing = b.op("Mul", start, b.const(np.float32(0)))
        first = b.op("Mul", b.op("Mul", b.op("Add", start, end), b.const(np.float32(0.5))), extent)
    samples = b.op("Add", first, b.op("Mul", b.const(np.arange(crop, dtype=np.float32)[np.newaxis]), spacing))
    inside = b.op("And", b.op("GreaterOrEqual", samples, b.const(np.float32(0))), b.op("LessOrEqual", samples, extent))
    roi_start = b.op("Add", b.op("Sub", first, b.op("Mul", spacing, b.const(np.float32(0.5)))), b.const(np.float32(0.5)))
    roi_end = b.op("Add", roi_start, b.op("Mul", spacing, b.const(np.float32(crop))))
    return roi_start, roi_end, inside


def _replace(graph: gs.Graph, crop: _CropLoop) -> None:
    b = _Builder(graph, f"{crop.loop.name}/roi_align")
    image = b.op("Transpose", crop.image, perm=[0, 3, 1, 2]) if crop.channels_last else crop.image
    shape = b.op("Cast", b.op("Shape", image), to=np.float32)
    extent_y, extent_x = (b.op("Sub", b.op("Gather", shape, b.const(np.int64(axis))), b.const(np.float32(1))) for axis in (2, 3))
    y1, x1, y2, x2 = (b.op("Slice", crop.boxes, b.const(np.array([i])), b.const(np.array([i + 1])), b.const(np.array([1])))
                      for i in range(4))
    crop_h, crop_w = crop.crop_size
    y_start, y_end, inside_y = _axis_samples(b, y1, y2, extent_y, crop_h)
    x_start, x_end, inside_x = _axis_samples(b, x1, x2, extent_x, crop_w)
    rois = b.op("Concat", x_start, y_start, x_end, y_end, axis=1)
    aligned = b.op("RoiAlign", image, rois, b.op("Cast", crop.box_indices, to=np.int64), mode="avg",
                   output_height=crop_h, output_width=crop_w, sampling_ratio=1, spatial_scale=1.0,
                   coordinate_transformation_mode="half_pixel")
    inside = b.op("And", b.op("Unsqueeze", inside_y, b.const(np.array([1, 3]))),
                  b.op("Unsqueeze", inside_x, b.const(np.array([1, 2]))))
    crops = b.op("Where", inside, aligned, b.const(np.float32(crop.extrapolation_value)))
    result = b.op("Transpose", crops, perm=list(crop.output_perm)) if crop.output_perm else crops
    # Hand the Loop's output tensor (name, shape, consumers) to the last new node.
    output = crop.loop.outputs[0]
    producer = result.inputs[0]
    producer.outputs = [output]
    crop.loop.outputs.clear()
