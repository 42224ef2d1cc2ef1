"""tf2onnx's Loop-based crop_and_resize against its RoiAlign replacement and TF itself."""

import numpy as np
import onnx
import pytest

tf = pytest.importorskip("tensorflow", reason="export tests need the export extra (tensorflow-cpu)")
tf2onnx = pytest.importorskip("tf2onnx", reason="export tests need the export extra (tf2onnx)")
gs = pytest.importorskip("onnx_graphsurgeon", reason="export tests need the export extra (onnx-graphsurgeon)")

from minescan.export.crop_and_resize import replace_crop_and_resize_loops  # noqa: E402
from minescan.export.detections import open_session  # noqa: E402
from minescan.export.errors import ExportError  # noqa: E402

CROP = (7, 5)


def _convert(crop_size: tuple[int, int], extrapolation: float, opset: int = 17) -> onnx.ModelProto:
    specs = [tf.TensorSpec([1, None, None, 3], tf.float32, name="image"), tf.TensorSpec([None, 4], tf.float32, name="boxes")]

    @tf.function(input_signature=specs, autograph=False)
    def crop(image, boxes):
        indices = tf.zeros(tf.shape(boxes)[:1], tf.int32)
        return tf.image.crop_and_resize(image, boxes, indices, crop_size, extrapolation_value=extrapolation)

    model, _ = tf2onnx.convert.from_function(crop, input_signature=specs, opset=opset)
    return model, crop


def _rewritten(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    graph = gs.import_onnx(model)
    count = replace_crop_and_resize_loops(graph)
    graph.cleanup().toposort()
    return gs.export_onnx(graph), count


def _boxes(rng: np.random.Generator) -> np.ndarray:
    corners = np.sort(rng.uniform(0, 1, (300, 2, 2)), axis=1)
    interior = corners.transpose(0, 2, 1).reshape(-1, 4)[:, [0, 2, 1, 3]]  # (y1, x1, y2, x2), y1 < y2, x1 < x2
    edge = interior.copy()
    edge[:100, 2] = 1.0  # ymax on the last row
    edge[100:200, 3] = 1.0  # xmax on the last column
    edge[200:, :2] = 0.0  # on the first row and column
    outside = np.array([[-0.3, -0.2, 1.2, 1.4], [0.5, 0.5, 0.5, 0.5], [0.9, 0.1, 0.2, 0.8], [-2.0, -2.0, -1.5, -1.2]])
    return np.concatenate([interior, edge, outside]).astype(np.float32)


def _run(model: onnx.ModelProto, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    session = open_session(model.SerializeToString())
    return session.run(None, {"image": image, "boxes": boxes})[0]


@pytest.mark.parametrize("extrapolation", [0.0, -1.5])
def test_roi_align_equals_tensorflow_on_random_edge_and_outside_boxes(extrapolation):
    model, crop = _convert(CROP, extrapolation)
    assert "Loop" in {n.op_type for n in model.graph.node}
    rewritten, count = _rewritten(model)
    ops = {n.op_type for n in rewritten.graph.node}
    assert count == 1 and "RoiAlign" in ops and "Loop" not in ops and "Resize" not in ops
    rng = np.random.default_rng(0)
    for size in ((9, 13), (32, 24)):
        image = rng.normal(size=(1, *size, 3)).astype(np.float32)
        boxes = _boxes(rng)
        expected = crop(image, boxes).numpy()
        actual = _run(rewritten, image, boxes)
        assert actual.shape == expected.shape == (len(boxes), *CROP, 3)
        # Exact up to interpolation-weight rounding, on every box: interior, edge and outside the image.
        np.testing.assert_allclose(actual, expected, atol=2e-5, rtol=0)
        # Outside boxes really hit the mask (RoiAlign alone would clamp within one pixel of the edge).
        assert (expected[-4] == extrapolation).any() and (expected[-1] == extrapolation).all()


def test_roi_align_equals_the_loop_on_interior_boxes():
    model, _ = _convert(CROP, 0.0)
    rewritten, _ = _rewritten(model)
    rng = np.random.default_rng(1)
    image = rng.normal(size=(1, 16, 16, 3)).astype(np.float32)
    boxes = _boxes(rng)[:300]  # interior boxes only: there the Loop of Resize is exact too
    np.testing.assert_allclose(_run(rewritten, image, boxes), _run(model, image, boxes), atol=2e-5, rtol=0)


def test_single_row_crops_sample_the_box_centre():
    model, crop = _convert((1, 1), 0.0)
    rewritten, _ = _rewritten(model)
    rng = np.random.default_rng(2)
    image = rng.normal(size=(1, 10, 10, 3)).astype(np.float32)
    boxes = _boxes(rng)[:300]
    np.testing.assert_allclose(_run(rewritten, image, boxes), crop(image, boxes).numpy(), atol=2e-5, rtol=0)


def test_opset_below_16_is_refused():
    model, _ = _convert(CROP, 0.0, opset=15)
    with pytest.raises(ExportError, match="needs opset 16 or later, the model has 15"):
        _rewritten(model)
