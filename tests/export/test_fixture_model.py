"""The fixture SavedModel looks like an OD API export."""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow", reason="export tests need the export extra (tensorflow-cpu)")

from minescan.export.label_map import read_label_map  # noqa: E402


def test_signature_is_the_od_api_one_with_extras(saved_model_dir):
    signature = tf.saved_model.load(str(saved_model_dir)).signatures["serving_default"]
    (spec,) = signature.structured_input_signature[1].values()
    assert (spec.name, spec.dtype, spec.shape.as_list()) == ("input_tensor", tf.uint8, [1, None, None, 3])
    shapes = {name: t.shape.as_list() for name, t in signature.structured_outputs.items()}
    assert shapes == {
        "detection_boxes": [1, 100, 4],
        "detection_scores": [1, 100],
        "detection_classes": [1, 100],
        "num_detections": [1],
        "detection_multiclass_scores": [1, 100, 3],
        "detection_anchor_indices": [1, 100],
        "raw_detection_boxes": [1, None, 4],
        "raw_detection_scores": [1, None, 3],
    }


def test_label_map_beside_the_saved_model(saved_model_dir):
    assert read_label_map(saved_model_dir.parent / "label_map.pbtxt") == {1: "illegal_mining", 2: "legal_mining"}


def test_outputs_are_unsaturated_normalized_and_one_based(saved_model_dir):
    signature = tf.saved_model.load(str(saved_model_dir)).signatures["serving_default"]
    image = np.random.default_rng(0).integers(0, 256, (1, 160, 224, 3), dtype=np.uint8)
    out = {k: v.numpy()[0] for k, v in signature(input_tensor=image).items()}
    count = int(out["num_detections"])
    assert 0 < count <= 100
    boxes, scores, classes = out["detection_boxes"][:count], out["detection_scores"][:count], out["detection_classes"][:count]
    assert np.all((boxes >= 0) & (boxes <= 1)) and np.all(boxes[:, 2:] >= boxes[:, :2])
    assert set(np.unique(classes)) <= {1.0, 2.0}
    assert np.all(np.diff(scores) <= 0)  # sorted, best first
    assert 0.05 < scores.min() and scores.max() < 0.95  # calibrated heads: no saturated 0/1 scores
    assert len(np.unique(scores)) == count  # no ties for TF and ONNX Runtime to break differently
