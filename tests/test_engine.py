import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from minescan.engine import DetectorInputError, load_detector
from minescan.engine.onnxruntime_backend import ModelLoadError
from minescan.model.contract import ContractError
from testkit.square_detector import LABELS, save_square_detector


def _tiles(n: int = 1, size: int = 96) -> np.ndarray:
    return np.zeros((n, size, size, 3), np.uint8)


def test_square_detector_finds_whole_and_edge_cut_rectangles(square_model):
    tiles = _tiles()
    tiles[0, 10:30, 20:50] = (240, 190, 120)  # reddish -> class 1
    tiles[0, 70:96, 80:96] = (120, 200, 240)  # bluish, cut by the bottom and right edges -> class 2
    (found,) = load_detector(square_model).detect(tiles, score_threshold=0.5)
    order = np.argsort(found.boxes[:, 0])
    np.testing.assert_allclose(found.boxes[order], [[20, 10, 50, 30], [80, 70, 96, 96]], atol=1e-4)
    assert found.classes[order].tolist() == [1, 2]
    assert np.all(found.scores > 0.5)


def test_labels_come_from_model_metadata(square_model):
    assert load_detector(square_model).metadata.labels == LABELS


def test_score_threshold_filters(square_model):
    tiles = _tiles()
    tiles[0, 10:20, 10:20] = (200, 150, 100)  # score (200 + 100) / 510 = 0.59
    detector = load_detector(square_model)
    assert len(detector.detect(tiles, 0.5)[0]) == 1
    assert len(detector.detect(tiles, 0.6)[0]) == 0


def test_batch_larger_than_a_fixed_batch_is_split(od_api_like_model, square_model):
    tiles = _tiles(5)
    for i in range(5):
        tiles[i, 5 + 10 * i : 15 + 10 * i, 5:25] = 250
    fixed = load_detector(od_api_like_model)
    assert fixed.signature.batch == 1 and fixed.signature.max_detections == 300
    results = fixed.detect(tiles, 0.5)
    assert len(results) == 5
    for i, found in enumerate(results):
        np.testing.assert_allclose(found.boxes, [[5, 5 + 10 * i, 25, 15 + 10 * i]], atol=1e-4)
    dynamic = load_detector(square_model).detect(tiles, 0.5)
    assert all(np.allclose(a.boxes, b.boxes) for a, b in zip(results, dynamic))


def test_fixed_size_model_refuses_other_tile_sizes(tmp_path):
    detector = load_detector(save_square_detector(tmp_path / "m.onnx", size=(128, 128)))
    assert (detector.signature.height, detector.signature.width) == (128, 128)
    with pytest.raises(DetectorInputError, match="96x96 px but the model takes 128x128"):
        detector.detect(_tiles(1, 96))


def _model(tmp_path, inputs, outputs, name="bad.onnx"):
    def constant(o):
        rank = len(o.type.tensor_type.shape.dim)
        return helper.make_node("Constant", [], [o.name], value=helper.make_tensor(o.name, TensorProto.FLOAT, [1] * rank, [0.0]))

    nodes = [constant(o) for o in outputs]
    graph = helper.make_graph(nodes, "bad", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def _out(name, rank):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [None] * rank)


_IMAGE = helper.make_tensor_value_info("input_tensor", TensorProto.UINT8, [None, None, None, 3])
_GOOD_OUTPUTS = [_out("detection_boxes", 3), _out("detection_scores", 2), _out("detection_classes", 2), _out("num_detections", 1)]


@pytest.mark.parametrize(
    "inputs,outputs,message",
    [
        ([_IMAGE], _GOOD_OUTPUTS[:3], r"has no output 'num_detections' \(outputs: detection_boxes, detection_classes"),
        ([_IMAGE], _GOOD_OUTPUTS[1:], r"has no output 'detection_boxes'"),
        ([helper.make_tensor_value_info("images", TensorProto.UINT8, [1, None, None, 3])], _GOOD_OUTPUTS, "no input 'input_tensor' .inputs: images"),
        ([helper.make_tensor_value_info("input_tensor", TensorProto.FLOAT, [1, None, None, 3])], _GOOD_OUTPUTS, "input 'input_tensor' is float, expected uint8"),
        ([helper.make_tensor_value_info("input_tensor", TensorProto.UINT8, [1, None, None, 4])], _GOOD_OUTPUTS, r"'input_tensor' has shape \[1, \?, \?, 4\], expected \[batch, H, W, 3\]"),
        ([_IMAGE], [_out("detection_boxes", 2)] + _GOOD_OUTPUTS[1:], r"'detection_boxes' has shape \[1, 1\], expected \[batch, K, 4\]"),
    ],
)
def test_model_outside_the_contract_names_what_is_wrong(tmp_path, inputs, outputs, message):
    with pytest.raises(ContractError, match=message) as caught:
        load_detector(_model(tmp_path, inputs, outputs))
    assert str(caught.value).startswith(str(tmp_path / "bad.onnx")) and "\n" not in str(caught.value)


def test_missing_and_unreadable_models(tmp_path):
    with pytest.raises(ModelLoadError, match="model not found: .*nothere.onnx"):
        load_detector(tmp_path / "nothere.onnx")
    (tmp_path / "saved_model").mkdir()
    with pytest.raises(ModelLoadError, match=r"saved_model: is a folder, not a model file \(an .onnx model, or a TensorRT .engine\)$"):
        load_detector(tmp_path / "saved_model")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not a protobuf" * 10)
    with pytest.raises(ModelLoadError, match="junk.onnx: not a loadable ONNX model"):
        load_detector(junk)


def test_tiles_must_be_uint8_rgb(square_model):
    with pytest.raises(DetectorInputError, match="uint8 \\[B, H, W, 3\\]"):
        load_detector(square_model).detect(np.zeros((1, 64, 64, 4), np.uint8))
