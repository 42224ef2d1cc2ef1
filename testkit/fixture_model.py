"""A real, randomly initialised Faster R-CNN SavedModel in the OD API serving contract.

Tests and benchmarks need the kind of SavedModel users bring from the TF Object
Detection API's ``exporter_main_v2.py``, without the OD API itself (it needs
legacy Keras and a training pipeline).  This module builds the same two-stage
detector from Keras 3 layers and ``tf.image`` ops:

    uint8 image → backbone → RPN over grid anchors → NMS proposals
    → ``crop_and_resize`` ROI pooling → box head (class scores and per-class
    box refinement) → per-class NMS → detections padded to K

and saves it with ``tf.saved_model.save`` under ``serving_default`` with the
OD API's signature: ``input_tensor`` uint8 [1, H, W, 3] (batch fixed at 1, any
H and W), the four contract outputs and the extras the exporter must drop
(``raw_detection_boxes``, ``raw_detection_scores``,
``detection_multiclass_scores``, ``detection_anchor_indices``).  A
``label_map.pbtxt`` is written beside the ``saved_model`` directory.

Two choices keep TF and ONNX Runtime comparable:

* per-class NMS is one ``tf.image.non_max_suppression`` over boxes shifted by
  class (the class-offset trick), because tf2onnx converts neither
  ``combined_non_max_suppression`` with per-class boxes nor
  ``non_max_suppression_padded``;
* the predictor layers are standardized on a calibration image (each output
  unit gets mean 0, std 1): random-init heads otherwise saturate scores to
  0/1 or crowd them into a narrow band, and the resulting (near-)ties are
  broken differently by TF and ONNX Runtime.

``resizer="od_api"`` adds the OD API exporter's preprocessing: each image of
the batch goes through a ``tf.map_fn`` (tf2onnx: a ``Loop`` over the batch)
that resizes it with the ``keep_aspect_ratio_resizer`` (min = max =
``resize_size``, ``pad_to_max_dimension``: the resize is chosen by a
``tf.cond`` on the image shape, tf2onnx: an ``If``) and zero-pads it to a
square; boxes are mapped back to the unpadded image.  That is the control
flow ``--target tensorrt`` has to remove on real OD API exports.

Backbones: ``"tiny"`` (a small residual conv stack, for tests: builds, saves
and converts in seconds) and ``"resnet50"`` (Keras ResNet50 up to
``conv4_block6_out``, the C4 feature map of Faster R-CNN ResNet-50, with an fc
box head instead of the conv5 stage: the compact variant, for benchmarks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from minescan.export._tensorflow import import_optional
from minescan.export.label_map import LABEL_MAP_NAME, write_label_map

tf = import_optional("tensorflow")
import keras  # noqa: E402  (Keras 3 ships with TensorFlow; importing it first would hide a missing TF)

DEFAULT_LABELS: Mapping[int, str] = {1: "illegal_mining", 2: "legal_mining"}
SAVED_MODEL_DIR = "saved_model"

# Faster R-CNN box coder scale factors (ty, tx, th, tw), as in the OD API configs.
_BOX_CODER_SCALES = (10.0, 10.0, 5.0, 5.0)
_CROP_SIZE = 14  # crop_and_resize size; a 2x2 max pool then gives 7x7, as in the OD API
RESIZERS = (None, "od_api")


@dataclass(frozen=True)
class _Architecture:
    stride: int  # backbone output stride in pixels
    anchor_base: float  # anchor side in pixels at scale 1
    anchor_scales: tuple[float, ...]
    anchor_ratios: tuple[float, ...]
    rpn_channels: int
    max_proposals: int
    head_channels: int  # 1x1 conv on each 7x7 crop before the fc layer
    head_units: int
    detection_iou: float = 0.6  # per-class NMS of the final detections, as the OD API's iou_threshold


_ARCHITECTURES: Mapping[str, _Architecture] = {
    "tiny": _Architecture(16, 32.0, (0.5, 1.0, 2.0), (0.5, 1.0, 2.0), 32, 100, 16, 64),
    "resnet50": _Architecture(16, 256.0, (0.25, 0.5, 1.0, 2.0), (0.5, 1.0, 2.0), 512, 300, 256, 1024),
}


def build_fixture_model(
    out_dir: str | Path,
    *,
    backbone: str = "tiny",
    labels: Mapping[int, str] = DEFAULT_LABELS,
    max_detections: int = 100,
    seed: int = 0,
    calibration_size: int = 256,
    resizer: str | None = None,
    resize_size: int = 256,
    first_stage_pre_nms_top_k: int | None = None,
) -> Path:
    """Build, save and return ``out_dir/saved_model``; ``out_dir/label_map.pbtxt`` holds ``labels``.

    ``seed`` makes the weights reproducible (it seeds Keras' global RNGs);
    ``calibration_size`` is the side of the seeded image the predictor layers
    are standardized on.  ``resizer="od_api"`` adds the OD API's per-image
    keep-aspect-ratio resize to ``resize_size`` (see the module doc).
    ``first_stage_pre_nms_top_k`` keeps only that many anchors of highest
    objectness before the first-stage NMS (``tf.math.top_k`` with ``K =
    min(top_k, anchors)``; tf2onnx: a TopK whose K folds to a constant once the
    input size is fixed); None (the default) runs NMS over every anchor.
    """
    if backbone not in _ARCHITECTURES:
        raise ValueError(f"unknown fixture backbone {backbone!r}; choose from {', '.join(_ARCHITECTURES)}")
    if resizer not in RESIZERS:
        raise ValueError(f"unknown fixture resizer {resizer!r}; choose from None, 'od_api'")
    keras.utils.set_random_seed(seed)
    detector = _FasterRCNN(backbone, num_classes=max(labels), max_detections=max_detections,
                           resize_size=resize_size if resizer else None, pre_nms_top_k=first_stage_pre_nms_top_k)
    rng = np.random.default_rng(seed)
    detector.calibrate(rng.integers(0, 256, (calibration_size, calibration_size, 3), dtype=np.uint8))

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    saved_model_dir = out_dir / SAVED_MODEL_DIR
    serve = detector.serve.get_concrete_function()
    tf.saved_model.save(detector, str(saved_model_dir), signatures={"serving_default": serve})
    write_label_map(out_dir / LABEL_MAP_NAME, labels)
    return saved_model_dir


def _tiny_backbone() -> keras.Model:
    image = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(image)
    for filters in (16, 32, 64):
        y = keras.layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu")(x)
        y = keras.layers.Conv2D(filters, 3, padding="same")(y)
        shortcut = keras.layers.Conv2D(filters, 1, strides=2)(x)
        x = keras.layers.ReLU()(keras.layers.Add()([y, shortcut]))
    return keras.Model(image, x, name="tiny_backbone")


def _resnet50_c4() -> keras.Model:
    resnet = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(None, None, 3))
    return keras.Model(resnet.input, resnet.get_layer("conv4_block6_out").output, name="resnet50_c4")


def _decode(deltas: tf.Tensor, boxes: tf.Tensor) -> tf.Tensor:
    """Faster R-CNN box coder: apply (ty, tx, th, tw) ``deltas`` to (ymin, xmin, ymax, xmax) ``boxes``."""
    ty, tx, th, tw = tf.unstack(deltas / tf.constant(_BOX_CODER_SCALES), axis=-1)
    ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=-1)
    height, width = ymax - ymin, xmax - xmin
    center_y = ymin + 0.5 * height + ty * height
    center_x = xmin + 0.5 * width + tx * width
    height, width = height * tf.exp(th), width * tf.exp(tw)
    decoded = tf.stack([center_y - 0.5 * height, center_x - 0.5 * width, center_y + 0.5 * height, center_x + 0.5 * width], -1)
    return tf.clip_by_value(decoded, 0.0, 1.0)


def _standardize(layer: keras.layers.Layer, inputs: tf.Tensor) -> None:
    """Set ``layer``'s kernel and bias so each output unit has mean 0 and std 1 over ``inputs``.

    Random backbones give nearly the same features everywhere, so unnormalized
    logits barely vary between positions and proposals: scores crowd into a
    narrow band where near-ties (broken differently by TF and ONNX Runtime)
    are common.  Standardizing each unit spreads them out.
    """
    outputs = tf.reshape(layer(inputs), [-1, layer.kernel.shape[-1]])
    mean, std = tf.reduce_mean(outputs, 0), tf.math.reduce_std(outputs, 0)
    layer.kernel.assign(layer.kernel / std)
    layer.bias.assign((layer.bias - mean) / std)


class _FasterRCNN(tf.Module):
    """The two-stage detector; ``serve`` is the OD API serving function."""

    def __init__(self, backbone: str, num_classes: int, max_detections: int, resize_size: int | None = None,
                 pre_nms_top_k: int | None = None) -> None:
        super().__init__(name="faster_rcnn")
        self.pre_nms_top_k = pre_nms_top_k  # None: NMS over every anchor
        self.resize_size = resize_size  # None: no OD API resizer
        self.arch = _ARCHITECTURES[backbone]
        self.num_classes = num_classes
        self.max_detections = max_detections
        self.num_anchors = len(self.arch.anchor_scales) * len(self.arch.anchor_ratios)
        self.backbone = _tiny_backbone() if backbone == "tiny" else _resnet50_c4()
        self.rpn_conv = keras.layers.Conv2D(self.arch.rpn_channels, 3, padding="same", activation="relu")
        self.rpn_objectness = keras.layers.Conv2D(self.num_anchors, 1)
        self.rpn_deltas = keras.layers.Conv2D(4 * self.num_anchors, 1)
        self.head_conv = keras.layers.Conv2D(self.arch.head_channels, 1, activation="relu")
        self.head_fc = keras.layers.Dense(self.arch.head_units, activation="relu")
        self.class_logits = keras.layers.Dense(num_classes + 1)
        self.box_deltas = keras.layers.Dense(4 * num_classes)

    def calibrate(self, image: np.ndarray) -> None:
        """Build the layers on ``image`` [H, W, 3] and standardize each predictor's outputs on it."""
        if self.resize_size:
            image, _ = _keep_aspect_ratio_resize(tf.cast(tf.constant(image), tf.float32), self.resize_size)
        features = self._features(tf.constant(image))
        hidden = self.rpn_conv(features)
        _standardize(self.rpn_objectness, hidden)
        _standardize(self.rpn_deltas, hidden)
        proposals, _ = self._proposals(tf.shape(image), features)
        hidden = self._head_hidden(features, proposals)
        _standardize(self.class_logits, hidden)
        _standardize(self.box_deltas, hidden)

    @tf.function(input_signature=[tf.TensorSpec([1, None, None, 3], tf.uint8, name="input_tensor")])
    def serve(self, input_tensor: tf.Tensor) -> dict[str, tf.Tensor]:
        if self.resize_size:
            return self._serve_resized(input_tensor)
        image = input_tensor[0]
        features = self._features(image)
        proposals, _ = self._proposals(tf.shape(image), features)
        hidden = self._head_hidden(features, proposals)
        probabilities = tf.nn.softmax(self.class_logits(hidden))
        deltas = tf.reshape(self.box_deltas(hidden), [-1, self.num_classes, 4])
        class_boxes = _decode(deltas, proposals[:, tf.newaxis, :])
        outputs = self._detections(class_boxes, probabilities)
        outputs["raw_detection_boxes"] = proposals
        outputs["raw_detection_scores"] = probabilities
        return {name: value[tf.newaxis] for name, value in outputs.items()}

    def _serve_resized(self, input_tensor: tf.Tensor) -> dict[str, tf.Tensor]:
        """The OD API exporter's path: map the resizer over the batch, detect on image 0, unpad the boxes."""
        size = self.resize_size

        def preprocess(image: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            return _keep_aspect_ratio_resize(tf.cast(image, tf.float32), size)

        images, true_shapes = tf.map_fn(
            preprocess, input_tensor, fn_output_signature=(tf.TensorSpec([size, size, 3], tf.float32), tf.TensorSpec([3], tf.int32))
        )
        image = images[0]
        features = self._features(image)
        proposals, _ = self._proposals(tf.shape(image), features)
        hidden = self._head_hidden(features, proposals)
        probabilities = tf.nn.softmax(self.class_logits(hidden))
        deltas = tf.reshape(self.box_deltas(hidden), [-1, self.num_classes, 4])
        outputs = self._detections(_decode(deltas, proposals[:, tf.newaxis, :]), probabilities)
        # Boxes are normalized to the padded square; the OD API maps them to the true image window.
        scale = float(size) / tf.cast(tf.tile(true_shapes[0, :2], [2]), tf.float32)
        outputs["detection_boxes"] = tf.clip_by_value(outputs["detection_boxes"] * scale, 0.0, 1.0)
        outputs["raw_detection_boxes"] = tf.clip_by_value(proposals * scale, 0.0, 1.0)
        outputs["raw_detection_scores"] = probabilities
        return {name: value[tf.newaxis] for name, value in outputs.items()}

    def _features(self, image: tf.Tensor) -> tf.Tensor:
        scaled = tf.cast(image, tf.float32) / 127.5 - 1.0
        return self.backbone(scaled[tf.newaxis], training=False)

    def _anchors(self, image_shape: tf.Tensor, features: tf.Tensor) -> tf.Tensor:
        """Grid anchors [h*w*A, 4], normalized, in the order of the RPN's flattened outputs."""
        sides = [(self.arch.anchor_base * s / math.sqrt(r), self.arch.anchor_base * s * math.sqrt(r))
                 for s in self.arch.anchor_scales for r in self.arch.anchor_ratios]
        half = 0.5 * tf.constant(sides, tf.float32)  # [A, 2] half height, half width
        stride = float(self.arch.stride)
        centers_y = (tf.cast(tf.range(tf.shape(features)[1]), tf.float32) + 0.5) * stride
        centers_x = (tf.cast(tf.range(tf.shape(features)[2]), tf.float32) + 0.5) * stride
        grid_y, grid_x = tf.meshgrid(centers_y, centers_x, indexing="ij")
        centers = tf.stack([grid_y, grid_x], -1)[:, :, tf.newaxis, :]  # [h, w, 1, 2]
        corners = tf.concat([centers - half, centers + half], -1)  # [h, w, A, 4]
        size = tf.cast(image_shape[:2], tf.float32)
        normalized = corners / tf.concat([size, size], 0)
        # The OD API clips anchors to the image before decoding (clip_anchors_to_image).
        return tf.clip_by_value(tf.reshape(normalized, [-1, 4]), 0.0, 1.0)

    def _proposals(self, image_shape: tf.Tensor, features: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """RPN proposals [P, 4] and their objectness [P] after NMS (P <= max_proposals)."""
        hidden = self.rpn_conv(features)
        objectness = tf.sigmoid(tf.reshape(self.rpn_objectness(hidden), [-1]))
        deltas = tf.reshape(self.rpn_deltas(hidden), [-1, 4])
        boxes = _decode(deltas, self._anchors(image_shape, features))
        if self.pre_nms_top_k:
            # The OD API's first-stage pre-NMS top-k: the K anchors of highest objectness, best first.
            k = tf.minimum(self.pre_nms_top_k, tf.shape(objectness)[0])
            objectness, order = tf.math.top_k(objectness, k)
            boxes = tf.gather(boxes, order)
        keep = tf.image.non_max_suppression(boxes, objectness, self.arch.max_proposals, iou_threshold=0.7)
        return tf.gather(boxes, keep), tf.gather(objectness, keep)

    def _head_hidden(self, features: tf.Tensor, proposals: tf.Tensor) -> tf.Tensor:
        """The box head's fc features [P, head_units] for each proposal."""
        crops = tf.image.crop_and_resize(
            features, proposals, tf.zeros(tf.shape(proposals)[:1], tf.int32), [_CROP_SIZE, _CROP_SIZE]
        )
        pooled = tf.nn.max_pool2d(crops, 2, 2, "VALID")
        reduced = self.head_conv(pooled)
        side = _CROP_SIZE // 2
        return self.head_fc(tf.reshape(reduced, [-1, side * side * self.arch.head_channels]))

    def _detections(self, class_boxes: tf.Tensor, probabilities: tf.Tensor) -> dict[str, tf.Tensor]:
        """Per-class NMS over [P, C, 4] boxes and [P, C+1] probabilities, padded to max_detections."""
        boxes = tf.reshape(class_boxes, [-1, 4])
        scores = tf.reshape(probabilities[:, 1:], [-1])
        classes = tf.tile(tf.range(self.num_classes), tf.shape(probabilities)[:1])
        # Boxes lie in [0, 1]; shifting class c by 2c puts classes in disjoint regions,
        # so one NMS never suppresses across classes.
        shifted = boxes + 2.0 * tf.cast(classes, tf.float32)[:, tf.newaxis]
        keep = tf.image.non_max_suppression(shifted, scores, self.max_detections, iou_threshold=self.arch.detection_iou)
        count = tf.shape(keep)[0]
        proposal_index = keep // self.num_classes

        def padded(values: tf.Tensor) -> tf.Tensor:
            padding = [[0, self.max_detections - count]] + [[0, 0]] * (len(values.shape) - 1)
            result = tf.pad(values, padding)
            result.set_shape([self.max_detections, *values.shape[1:]])  # static K, as in OD API exports
            return result

        return {
            "detection_boxes": padded(tf.gather(boxes, keep)),
            "detection_scores": padded(tf.gather(scores, keep)),
            # Like the OD API, the 1-based offset is added after padding, so padded slots read class 1.
            "detection_classes": padded(tf.cast(tf.gather(classes, keep), tf.float32)) + 1.0,
            "num_detections": tf.cast(count, tf.float32),
            "detection_multiclass_scores": padded(tf.gather(probabilities, proposal_index)),
            "detection_anchor_indices": padded(tf.cast(proposal_index, tf.float32)),
        }


def _keep_aspect_ratio_resize(image: tf.Tensor, size: int) -> tuple[tf.Tensor, tf.Tensor]:
    """The OD API's ``keep_aspect_ratio_resizer`` with min = max = ``size`` and ``pad_to_max_dimension``.

    As in ``preprocessor.resize_to_range`` for a dynamic shape: scale the short
    side to ``size`` unless that makes the long side exceed it, in which case
    scale the long side to ``size`` (a ``tf.cond``); bilinear resize, then
    zero-pad bottom and right to ``size`` x ``size``.  Returns the padded
    float image and the true (resized) shape [h, w, 3].
    """
    shape = tf.shape(image)
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    target = tf.constant(float(size))
    small_scale = target / tf.minimum(height, width)
    small_size = tf.cast(tf.round(tf.stack([height * small_scale, width * small_scale])), tf.int32)
    large_scale = target / tf.maximum(height, width)
    large_size = tf.cast(tf.round(tf.stack([height * large_scale, width * large_scale])), tf.int32)
    resized = tf.cond(
        tf.cast(tf.reduce_max(small_size), tf.float32) > target,
        lambda: tf.image.resize(image, large_size),
        lambda: tf.image.resize(image, small_size),
    )
    padded = tf.image.pad_to_bounding_box(resized, 0, 0, size, size)
    return padded, tf.concat([tf.shape(resized)[:2], [3]], 0)
