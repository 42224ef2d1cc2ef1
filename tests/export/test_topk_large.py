"""TopK with K >= 3840 split into rounds of smaller TopKs: bit-equal to ONNX's TopK on ONNX Runtime, ties included (no TF)."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

ort = pytest.importorskip("onnxruntime", reason="the TopK rewrite is checked on ONNX Runtime")

from minescan.export.tensorrt_ops import TOPK_MAX_K, tensorrt_problems  # noqa: E402
from minescan.export.topk import bound_dynamic_topk, constant_ks, round_sizes, split_large_topk  # noqa: E402

_INT64 = TensorProto.INT64


def _model(nodes, inputs, initializers=()) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "topk", inputs,
        [helper.make_tensor_value_info("values", inputs[0].type.tensor_type.elem_type, None),
         helper.make_tensor_value_info("indices", _INT64, None)],
        list(initializers),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)


def _constant_k_model(shape, k, *, axis=-1, largest=1, dtype=TensorProto.FLOAT) -> onnx.ModelProto:
    topk = helper.make_node("TopK", ["x", "k"], ["values", "indices"], name="topk", axis=axis, largest=largest)
    return _model([topk], [helper.make_tensor_value_info("x", dtype, shape)], [numpy_helper.from_array(np.array([k], np.int64), "k")])


def _pre_nms_model() -> onnx.ModelProto:
    """A first stage's pre-NMS top-k on an image of any size: TopK(x, K = min(6000, len(x))), as tf2onnx writes it."""
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["length"], axis=0),
        helper.make_node("Min", ["top", "length"], ["k_scalar"]),
        helper.make_node("Unsqueeze", ["k_scalar", "axes"], ["k"]),
        helper.make_node("TopK", ["x", "k"], ["values", "indices"], name="pre_nms_topk"),
    ]
    constants = [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in (("zero", 0), ("top", 6000), ("axes", [0]))]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["anchors"])], constants)


def _run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["values", "indices"], {"x": x})


def _tied(rng: np.random.Generator, shape, dtype=np.float32) -> np.ndarray:
    """Scores on a coarse grid (every value repeats ~100 times), with -inf, -0.0 / +0.0 and +inf ties too."""
    x = (rng.integers(-60, 60, shape) / 8).astype(dtype)
    if np.issubdtype(dtype, np.floating):
        flat = x.reshape(-1)
        flat[rng.choice(flat.size, flat.size // 20, replace=False)] = -np.inf
        flat[rng.choice(flat.size, flat.size // 20, replace=False)] = -0.0
        flat[rng.choice(flat.size, 7, replace=False)] = np.inf
    return x


def _rewritten(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    assert split_large_topk(copy) == 1
    onnx.checker.check_model(copy)
    return copy


def _assert_bit_equal(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_array_equal(g.view(np.uint8) if g.dtype.kind == "f" else g, w.view(np.uint8) if w.dtype.kind == "f" else w)


@pytest.mark.parametrize("k, n", [(3840, 9216), (6000, 9216), (6000, 6000), (11600, 12000)])
def test_a_large_constant_k_gives_the_same_values_and_indices_ties_included(k, n):
    model = _constant_k_model([n], k)
    rewritten = _rewritten(model)
    assert tensorrt_problems(model) and tensorrt_problems(rewritten) == []
    assert sorted(constant_ks(rewritten).values()) == sorted(round_sizes(k))
    rng = np.random.default_rng(k + n)
    for _ in range(3):
        x = _tied(rng, [n])
        want = _run(model, x)
        assert len(np.unique(want[0])) < k // 20  # the selection runs through long runs of ties
        _assert_bit_equal(_run(rewritten, x), want)
    everything_tied = np.zeros(n, np.float32)
    _assert_bit_equal(_run(rewritten, everything_tied), _run(model, everything_tied))


@pytest.mark.parametrize(
    "shape, k, axis, largest, dtype",
    [
        ([3, 5000], 4500, 1, 1, np.float32),  # rows
        ([4100, 2], 3900, 0, 1, np.float32),  # a leading axis (transposed there and back)
        ([8000], 7000, 0, 0, np.float32),  # smallest first
        ([9000], 5000, -1, 1, np.int32),
    ],
)
def test_rows_axes_order_and_integers(shape, k, axis, largest, dtype):
    model = _constant_k_model(shape, k, axis=axis, largest=largest, dtype=helper.np_dtype_to_tensor_dtype(np.dtype(dtype)))
    rewritten = _rewritten(model)
    assert tensorrt_problems(rewritten) == []
    x = _tied(np.random.default_rng(k), shape, dtype)
    _assert_bit_equal(_run(rewritten, x), _run(model, x))


def test_a_dynamic_k_bounded_by_its_own_value_is_padded_then_split():
    """K = min(6000, n) on an input of any length: bounded by 6000, padded, split into 2 x 3000, sliced back to K."""
    model = _pre_nms_model()
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    assert "K must be an initializer" in tensorrt_problems(model)[0]
    assert bound_dynamic_topk(rewritten) == 1
    rewritten = onnx.shape_inference.infer_shapes(rewritten)
    assert split_large_topk(rewritten) == 1
    onnx.checker.check_model(rewritten)
    assert tensorrt_problems(rewritten) == [] and sorted(constant_ks(rewritten).values()) == [3000, 3000]
    rng = np.random.default_rng(7)
    for n in (2304, 3839, 6000, 9216, 20000):  # fewer anchors than the top-k (then K = n: a full sort), and more
        x = _tied(rng, [n])
        want = _run(model, x)
        assert len(want[0]) == min(n, 6000)
        _assert_bit_equal(_run(rewritten, x), want)


def test_round_sizes_are_below_the_limit_and_add_up():
    assert round_sizes(3840) == (1920, 1920) and round_sizes(6000) == (3000, 3000) and round_sizes(3839) == (3839,)
    for k in (3840, 6000, 7678, 7679, 100_000):
        sizes = round_sizes(k)
        assert sum(sizes) == k and max(sizes) < TOPK_MAX_K and len(sizes) == -(-k // (TOPK_MAX_K - 1))


def test_small_and_unsplittable_topks_are_left_alone():
    small = _constant_k_model([5000], 3839)
    assert split_large_topk(small) == 0 and tensorrt_problems(small) == []
    # Rows of unknown count: the rounds could not reshape the compacted survivors back into rows.
    unknown_rows = _constant_k_model(["rows", 5000], 4000)
    assert split_large_topk(unknown_rows) == 0
    assert tensorrt_problems(unknown_rows) == ["TopK node 'topk': K must be an initializer below 3840"]
