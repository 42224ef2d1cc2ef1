"""Single-trip Loop unrolling, constant-If inlining and TopK bounding on small hand-built graphs (no TF)."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from minescan.export.control_flow import drop_identities, inline_constant_ifs, unroll_single_trip_loops
from minescan.export.topk import bound_dynamic_topk, constant_ks


def _run(model: onnx.ModelProto, **feeds: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _map_loop_model(trip_count: int) -> onnx.ModelProto:
    """x [B, 3] -> Loop over the batch (like tf.map_fn): a carried counter and a scan output x[i] * 2 + outer bias."""
    body = helper.make_graph(
        [
            helper.make_node("Gather", ["x", "i"], ["row"], axis=0),
            helper.make_node("Mul", ["row", "two"], ["doubled"]),
            helper.make_node("Add", ["doubled", "bias"], ["scanned"]),  # bias: an outer-scope value
            helper.make_node("Add", ["count_in", "one"], ["count_out"]),
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("count_in", TensorProto.FLOAT, []),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("count_out", TensorProto.FLOAT, []),
            helper.make_tensor_value_info("scanned", TensorProto.FLOAT, [3]),
        ],
        [numpy_helper.from_array(np.array(2.0, np.float32), "two"), numpy_helper.from_array(np.array(1.0, np.float32), "one")],
    )
    graph = helper.make_graph(
        [
            helper.make_node("Relu", ["b"], ["bias"]),
            helper.make_node("Loop", ["trips", "true", "zero"], ["count", "stacked"], body=body),
            helper.make_node("Identity", ["stacked"], ["y"]),
        ],
        "map",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [trip_count, 3]), helper.make_tensor_value_info("b", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("count", TensorProto.FLOAT, []), helper.make_tensor_value_info("y", TensorProto.FLOAT, [trip_count, 3])],
        [
            numpy_helper.from_array(np.array(trip_count, np.int64), "trips"),
            numpy_helper.from_array(np.array(True), "true"),
            numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        ],
    )
    return _model(graph)


def test_a_single_trip_loop_becomes_its_body():
    model = _map_loop_model(1)
    x, b = np.array([[-1.0, 2.0, 3.0]], np.float32), np.array([0.5, -1.0, 0.0], np.float32)
    expected = _run(model, x=x, b=b)
    assert unroll_single_trip_loops(model) == 1
    assert drop_identities(model) >= 1
    assert "Loop" not in {n.op_type for n in model.graph.node}
    onnx.checker.check_model(model)
    for got, want in zip(_run(model, x=x, b=b), expected):
        np.testing.assert_array_equal(got, want)
    assert _run(model, x=x, b=b)[1].tolist() == [[-1.5, 4.0, 6.0]]


def test_a_loop_of_two_trips_is_left_alone():
    model = _map_loop_model(2)
    assert unroll_single_trip_loops(model) == 0 and "Loop" in {n.op_type for n in model.graph.node}


def _if_model(condition: bool) -> onnx.ModelProto:
    def branch(name: str, factor: float) -> onnx.GraphProto:
        return helper.make_graph(
            [helper.make_node("Mul", ["x", f"{name}_factor"], [f"{name}_out"])],
            name,
            [],
            [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, [2])],
            [numpy_helper.from_array(np.array(factor, np.float32), f"{name}_factor")],
        )

    graph = helper.make_graph(
        [helper.make_node("If", ["cond"], ["y"], then_branch=branch("then", 2.0), else_branch=branch("else", 3.0))],
        "resize_choice",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        [numpy_helper.from_array(np.array(condition), "cond")],
    )
    return _model(graph)


@pytest.mark.parametrize("condition, factor", [(True, 2.0), (False, 3.0)])
def test_a_constant_if_becomes_the_branch_it_takes(condition, factor):
    model = _if_model(condition)
    assert inline_constant_ifs(model) == 1
    assert "If" not in {n.op_type for n in model.graph.node}
    onnx.checker.check_model(model)
    assert _run(model, x=np.array([1.0, -2.0], np.float32))[0].tolist() == [factor, -2 * factor]


def _sort_model() -> onnx.ModelProto:
    """The OD API's SortByField after a filter: keep scores > 0 (NonZero), then TopK(K = their count)."""
    graph = helper.make_graph(
        [
            helper.make_node("Greater", ["scores", "zero"], ["keep"]),
            helper.make_node("NonZero", ["keep"], ["where"]),
            helper.make_node("Reshape", ["where", "flat"], ["indices"]),
            helper.make_node("Gather", ["scores", "indices"], ["kept"]),
            helper.make_node("Shape", ["kept"], ["count"]),
            helper.make_node("TopK", ["kept", "count"], ["values", "order"]),
        ],
        "sort",
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [50])],
        [helper.make_tensor_value_info("values", TensorProto.FLOAT, [None]), helper.make_tensor_value_info("order", TensorProto.INT64, [None])],
        [numpy_helper.from_array(np.array(0.0, np.float32), "zero"), numpy_helper.from_array(np.array([-1], np.int64), "flat")],
    )
    return onnx.shape_inference.infer_shapes(_model(graph))


def test_a_computed_topk_k_gets_a_static_bound_and_the_same_results():
    model = _sort_model()
    rng = np.random.default_rng(0)
    cases = [rng.normal(size=50).astype(np.float32) for _ in range(3)]
    cases += [np.full(50, -1.0, np.float32), np.full(50, 1.0, np.float32)]  # none kept; all kept and tied
    expected = [_run(model, scores=scores) for scores in cases]
    assert bound_dynamic_topk(model) == 1
    assert list(constant_ks(model).values()) == [50]  # NonZero of 50 scores keeps at most 50
    onnx.checker.check_model(model)
    for scores, want in zip(cases, expected):
        got = _run(model, scores=scores)
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)
