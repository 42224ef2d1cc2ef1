import pytest

from minescan.export.contract import TensorSpec, check_contract

GOOD_INPUTS = {"input_tensor": TensorSpec("uint8", (1, None, None, 3))}
GOOD_OUTPUTS = {
    "detection_boxes": TensorSpec("float32", (1, 100, 4)),
    "detection_scores": TensorSpec("float32", (1, 100)),
    "detection_classes": TensorSpec("float32", (1, 100)),
    "num_detections": TensorSpec("float32", (1,)),
    "raw_detection_boxes": TensorSpec("float32", (1, 300, 4)),
}


def test_od_api_signature_meets_the_contract_extras_included():
    assert check_contract(GOOD_INPUTS, GOOD_OUTPUTS, "m") == []


def test_symbolic_and_unknown_dims_pass():
    outputs = {**GOOD_OUTPUTS, "detection_boxes": TensorSpec("float32", ("batch", "k", None))}
    assert check_contract({"input_tensor": TensorSpec("uint8", ("batch", "h", "w", 3))}, outputs, "m") == []


@pytest.mark.parametrize(
    ("inputs", "outputs", "expected"),
    [
        ({"images": GOOD_INPUTS["input_tensor"]}, GOOD_OUTPUTS, "m has no input 'input_tensor' (inputs: images)"),
        ({"input_tensor": TensorSpec("float32", (1, None, None, 3))}, GOOD_OUTPUTS, "m input 'input_tensor' is float32, expected uint8"),
        ({"input_tensor": TensorSpec("uint8", (1, None, None, 4))}, GOOD_OUTPUTS, "m input 'input_tensor' has shape [1, ?, ?, 4], expected [batch, H, W, 3]"),
        (GOOD_INPUTS, {k: v for k, v in GOOD_OUTPUTS.items() if k != "num_detections"}, "m has no output 'num_detections'"),
        (GOOD_INPUTS, {**GOOD_OUTPUTS, "detection_classes": TensorSpec("int64", (1, 100))}, "m output 'detection_classes' is int64, expected float32"),
        (GOOD_INPUTS, {**GOOD_OUTPUTS, "detection_boxes": TensorSpec("float32", (1, 100, 5))}, "m output 'detection_boxes' has shape [1, 100, 5], expected [batch, K, 4]"),
        (GOOD_INPUTS, {**GOOD_OUTPUTS, "detection_scores": TensorSpec("float32", (100,))}, "m output 'detection_scores' has shape [100], expected [batch, K]"),
    ],
)
def test_each_fault_is_named(inputs, outputs, expected):
    problems = check_contract(inputs, outputs, "m")
    assert len(problems) == 1
    assert problems[0].startswith(expected)
