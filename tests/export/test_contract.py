import pytest

from minescan.model.contract import ContractError, ModelSignature, TensorSpec, check_contract, contract_problems


def spec(dtype, shape):
    return dtype, shape


def specs(by_name):
    return [TensorSpec(name, dtype, shape) for name, (dtype, shape) in by_name.items()]


GOOD_INPUTS = {"input_tensor": spec("uint8", (1, None, None, 3))}
GOOD_OUTPUTS = {
    "detection_boxes": spec("float32", (1, 100, 4)),
    "detection_scores": spec("float32", (1, 100)),
    "detection_classes": spec("float32", (1, 100)),
    "num_detections": spec("float32", (1,)),
    "raw_detection_boxes": spec("float32", (1, 300, 4)),
}


def strict(inputs, outputs):
    return contract_problems("m", specs(inputs), specs(outputs), strict=True)


def test_od_api_signature_meets_the_contract_extras_included():
    assert strict(GOOD_INPUTS, GOOD_OUTPUTS) == []
    assert check_contract("m", specs(GOOD_INPUTS), specs(GOOD_OUTPUTS), strict=True) == ModelSignature(1, None, None, 100)


def test_symbolic_and_unknown_dims_pass():
    outputs = {**GOOD_OUTPUTS, "detection_boxes": spec("float32", ("batch", "k", None))}
    assert strict({"input_tensor": spec("uint8", ("batch", "h", "w", 3))}, outputs) == []
    assert strict({"input_tensor": spec("uint8", None)}, {**GOOD_OUTPUTS, "num_detections": spec("float32", None)}) == []


@pytest.mark.parametrize(
    ("inputs", "outputs", "expected"),
    [
        ({"images": GOOD_INPUTS["input_tensor"]}, GOOD_OUTPUTS, "m has no input 'input_tensor' (inputs: images)"),
        ({"input_tensor": spec("float32", (1, None, None, 3))}, GOOD_OUTPUTS, "m input 'input_tensor' is float32, expected uint8"),
        ({"input_tensor": spec("uint8", (1, None, None, 4))}, GOOD_OUTPUTS, "m input 'input_tensor' has shape [1, ?, ?, 4], expected [batch, H, W, 3]"),
        ({**GOOD_INPUTS, "extra": spec("float32", (1,))}, GOOD_OUTPUTS, "m has inputs besides 'input_tensor': extra"),
        (GOOD_INPUTS, {k: v for k, v in GOOD_OUTPUTS.items() if k != "num_detections"}, "m has no output 'num_detections'"),
        (GOOD_INPUTS, {**GOOD_OUTPUTS, "detection_classes": spec("int64", (1, 100))}, "m output 'detection_classes' is int64, expected float32"),
        (GOOD_INPUTS, {**GOOD_OUTPUTS, "detection_boxes": spec("float32", (1, 100, 5))}, "m output 'detection_boxes' has shape [1, 100, 5], expected [batch, K, 4]"),
        (GOOD_INPUTS, {**GOOD_OUTPUTS, "detection_scores": spec("float32", (100,))}, "m output 'detection_scores' has shape [100], expected [batch, K]"),
    ],
)
def test_each_fault_is_named(inputs, outputs, expected):
    problems = strict(inputs, outputs)
    assert len(problems) == 1
    assert problems[0].startswith(expected)


def test_strict_mode_reports_every_problem_at_once_on_one_line():
    inputs = {"input_tensor": spec("float32", (1, None, None, 4))}
    outputs = {**GOOD_OUTPUTS, "detection_classes": spec("int64", (1, 100))}
    del outputs["num_detections"]
    assert len(strict(inputs, outputs)) == 4
    with pytest.raises(ContractError) as caught:
        check_contract("m", specs(inputs), specs(outputs), strict=True)
    assert str(caught.value).count("; ") == 3 and "\n" not in str(caught.value)


def test_lenient_mode_takes_any_numeric_output_and_backend_type_names():
    outputs = {**GOOD_OUTPUTS, "detection_classes": spec("int64", (1, 100)), "detection_scores": spec("float", (1, 100))}
    assert check_contract("m", specs(GOOD_INPUTS), specs(outputs)) == ModelSignature(1, None, None, 100)
    assert strict(GOOD_INPUTS, {**GOOD_OUTPUTS, "detection_scores": spec("float", (1, 100))}) == []  # ONNX Runtime's name
    assert strict(GOOD_INPUTS, outputs) == ["m output 'detection_classes' is int64, expected float32"]
    with pytest.raises(ContractError, match="m output 'detection_scores' is string, expected a numeric type"):
        check_contract("m", specs(GOOD_INPUTS), specs({**GOOD_OUTPUTS, "detection_scores": spec("string", (1, 100))}))
