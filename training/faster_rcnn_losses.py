"""Training losses for the project's Faster R-CNN (:mod:`testkit.fixture_model`).

The detector trained here is the export fixture's ``_FasterRCNN`` itself (tiny
backbone), so what is trained is exactly what ``serve`` exports.  Only the
anchors differ: :data:`DEMO_ARCHITECTURE` sizes them for mining sites at 10 m
(24, 48 and 104 px sides at ratios 0.5, 1, 2).

Faster R-CNN learns in two stages, each with a classification and a box loss,
as in the TF Object Detection API:

* **RPN.** Every anchor is matched to the truth box it overlaps most.  IoU >=
  0.7 makes it positive, < 0.3 negative, in between it is ignored; each truth
  box's best anchor is positive too, so no object goes unmatched.  256
  anchors are sampled, at most half positive.  Loss: sigmoid cross-entropy of
  the objectness logit, plus a Huber (smooth L1) loss on the box deltas of
  the positives.
* **Box head.** The RPN's proposals (with the truth boxes added, so early on
  there are positives at all) are matched the same way: IoU >= 0.5 makes a
  foreground ROI of its truth box's class, anything less is background.  64
  ROIs are sampled, at most a quarter foreground.  Loss: softmax
  cross-entropy over background + classes, plus a Huber loss on the deltas
  predicted for the true class of each foreground ROI.

Box deltas use the Faster R-CNN box coder with scales (10, 10, 5, 5), the
inverse of the fixture's ``_decode``.  Both losses of a stage are divided by
the number of sampled anchors/ROIs; box losses weigh 2, as in the OD API's
Faster R-CNN configs.  Boxes are normalized ``(ymin, xmin, ymax, xmax)``;
truth arrives padded to a fixed count with class 0, so one traced graph serves
every tile.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import keras
import tensorflow as tf

from testkit import fixture_model
from minescan.export.label_map import LABEL_MAP_NAME, write_label_map

DEMO_ARCHITECTURE = dataclasses.replace(
    fixture_model._ARCHITECTURES["tiny"], anchor_base=32.0, anchor_scales=(0.75, 1.5, 3.25),
    # Illegal-mining clusters are irregular: at IoU 0.6 a partial second box on the same
    # cluster survived NMS (precision 0.847 on a fresh scene); 0.4 removes them.
    detection_iou=0.4,
)
_LAYERS = ("backbone", "rpn_conv", "rpn_objectness", "rpn_deltas", "head_conv", "head_fc", "class_logits", "box_deltas")


@dataclass(frozen=True)
class TargetSettings:
    """Target assignment and sampling (OD API Faster R-CNN defaults)."""

    rpn_batch: int = 256
    rpn_positive_fraction: float = 0.5
    rpn_positive_iou: float = 0.7
    rpn_negative_iou: float = 0.3
    roi_batch: int = 64
    roi_positive_fraction: float = 0.25
    roi_positive_iou: float = 0.5
    localization_weight: float = 2.0


def build_detector(num_classes: int, max_detections: int = 100) -> fixture_model._FasterRCNN:
    """The fixture's tiny Faster R-CNN with :data:`DEMO_ARCHITECTURE`'s anchors, layers not yet built."""
    detector = fixture_model._FasterRCNN("tiny", num_classes=num_classes, max_detections=max_detections)
    detector.arch = DEMO_ARCHITECTURE
    return detector


def trainable_variables(detector: fixture_model._FasterRCNN) -> list:
    """Every trainable weight of the detector's Keras layers."""
    return [v for name in _LAYERS for v in getattr(detector, name).trainable_variables]


def encode(boxes: tf.Tensor, anchors: tf.Tensor) -> tf.Tensor:
    """Box coder deltas (ty, tx, th, tw) that turn ``anchors`` into ``boxes`` (inverse of the fixture's ``_decode``)."""
    def centre_size(b: tf.Tensor) -> tuple[tf.Tensor, ...]:
        ymin, xmin, ymax, xmax = tf.unstack(b, axis=-1)
        h, w = tf.maximum(ymax - ymin, 1e-4), tf.maximum(xmax - xmin, 1e-4)
        return ymin + 0.5 * h, xmin + 0.5 * w, h, w

    cy, cx, h, w = centre_size(boxes)
    acy, acx, ah, aw = centre_size(anchors)
    deltas = tf.stack([(cy - acy) / ah, (cx - acx) / aw, tf.math.log(h / ah), tf.math.log(w / aw)], -1)
    return deltas * tf.constant(fixture_model._BOX_CODER_SCALES)


def pairwise_iou(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """IoU [N, M] of boxes ``a`` [N, 4] and ``b`` [M, 4]."""
    a, b = a[:, tf.newaxis, :], b[tf.newaxis, :, :]
    h = tf.maximum(tf.minimum(a[..., 2], b[..., 2]) - tf.maximum(a[..., 0], b[..., 0]), 0.0)
    w = tf.maximum(tf.minimum(a[..., 3], b[..., 3]) - tf.maximum(a[..., 1], b[..., 1]), 0.0)
    inter = h * w
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / tf.maximum(area_a + area_b - inter, 1e-9)


def _sample(candidates: tf.Tensor, count: tf.Tensor) -> tf.Tensor:
    """A random subset (bool mask) of at most ``count`` of the ``candidates`` (bool mask)."""
    scores = tf.where(candidates, tf.random.uniform(tf.shape(candidates)), -1.0)
    top = tf.math.top_k(scores, k=tf.minimum(tf.cast(count, tf.int32), tf.size(scores))).indices
    chosen = tf.scatter_nd(top[:, tf.newaxis], tf.ones_like(top, tf.bool), tf.shape(candidates))
    return chosen & candidates


def _balanced(positive: tf.Tensor, negative: tf.Tensor, batch: int, fraction: float) -> tuple[tf.Tensor, tf.Tensor]:
    """Sampled positives and negatives: at most ``fraction`` of ``batch`` positive, negatives fill the rest."""
    positives = _sample(positive, int(batch * fraction))
    negatives = _sample(negative, batch - tf.reduce_sum(tf.cast(positives, tf.int32)))
    return positives, negatives


def _huber(x: tf.Tensor) -> tf.Tensor:
    """Smooth L1 (Huber, delta 1) summed over the last axis."""
    return tf.reduce_sum(tf.where(tf.abs(x) < 1.0, 0.5 * x * x, tf.abs(x) - 0.5), -1)


def _match(boxes: tf.Tensor, truth: tf.Tensor, valid: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """IoU matrix (padding columns 0), each box's best IoU and its best truth index."""
    ious = pairwise_iou(boxes, truth) * tf.cast(valid, tf.float32)[tf.newaxis]
    return ious, tf.reduce_max(ious, 1), tf.argmax(ious, 1, output_type=tf.int32)


def _rpn_losses(anchors, logits, deltas, truth, valid, s: TargetSettings) -> tuple[tf.Tensor, tf.Tensor]:
    ious, best, match = _match(anchors, truth, valid)
    best_per_truth = tf.reduce_max(ious, 0)
    is_best_anchor = tf.reduce_any((ious >= best_per_truth[tf.newaxis] - 1e-6) & (ious > 0), 1)
    positive = (best >= s.rpn_positive_iou) | is_best_anchor
    negative = (best < s.rpn_negative_iou) & ~positive
    positives, negatives = _balanced(positive, negative, s.rpn_batch, s.rpn_positive_fraction)
    sampled = tf.maximum(tf.reduce_sum(tf.cast(positives | negatives, tf.float32)), 1.0)
    objectness = tf.nn.sigmoid_cross_entropy_with_logits(tf.cast(positive, tf.float32), logits)
    classification = tf.reduce_sum(tf.where(positives | negatives, objectness, 0.0)) / sampled
    targets = encode(tf.gather(truth, match), anchors)
    localization = tf.reduce_sum(tf.where(positives, _huber(targets - deltas), 0.0)) / sampled
    return classification, localization


def _box_head_losses(detector, features, rois, truth, classes, valid, s: TargetSettings) -> tuple[tf.Tensor, tf.Tensor]:
    _, best, match = _match(rois, truth, valid)
    foreground = best >= s.roi_positive_iou
    positives, negatives = _balanced(foreground, ~foreground, s.roi_batch, s.roi_positive_fraction)
    chosen = tf.where(positives | negatives)[:, 0]
    rois, match = tf.gather(rois, chosen), tf.gather(match, chosen)
    labels = tf.where(tf.gather(foreground, chosen), tf.gather(classes, match), 0)
    hidden = detector._head_hidden(features, rois)
    logits = detector.class_logits(hidden)
    count = tf.maximum(tf.cast(tf.size(labels), tf.float32), 1.0)
    classification = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)) / count
    deltas = tf.reshape(detector.box_deltas(hidden), [-1, detector.num_classes, 4])
    class_deltas = tf.gather(deltas, tf.maximum(labels - 1, 0), batch_dims=1)
    targets = encode(tf.gather(truth, match), rois)
    localization = tf.reduce_sum(tf.where(labels > 0, _huber(targets - class_deltas), 0.0)) / count
    return classification, localization


def image_losses(
    detector: fixture_model._FasterRCNN, image: tf.Tensor, truth: tf.Tensor, classes: tf.Tensor, s: TargetSettings
) -> dict[str, tf.Tensor]:
    """The four losses for one uint8 image [H, W, 3] and its padded truth ([G, 4] normalized, classes [G], 0 = padding)."""
    valid = classes > 0
    features = detector._features(image)
    hidden = detector.rpn_conv(features)
    logits = tf.reshape(detector.rpn_objectness(hidden), [-1])
    deltas = tf.reshape(detector.rpn_deltas(hidden), [-1, 4])
    anchors = detector._anchors(tf.shape(image), features)
    rpn_classification, rpn_localization = _rpn_losses(anchors, logits, deltas, truth, valid, s)
    proposals, _ = detector._proposals(tf.shape(image), features)
    rois = tf.stop_gradient(tf.concat([proposals, tf.boolean_mask(truth, valid)], 0))
    head_classification, head_localization = _box_head_losses(detector, features, rois, truth, classes, valid, s)
    return {
        "rpn_objectness": rpn_classification,
        "rpn_box": rpn_localization,
        "head_class": head_classification,
        "head_box": head_localization,
    }


def total_loss(losses: Mapping[str, tf.Tensor], s: TargetSettings) -> tf.Tensor:
    """Classification losses plus the weighted box losses."""
    return losses["rpn_objectness"] + losses["head_class"] + s.localization_weight * (losses["rpn_box"] + losses["head_box"])


def make_train_step(detector: fixture_model._FasterRCNN, optimizer: keras.optimizers.Optimizer, s: TargetSettings):
    """A compiled step: losses averaged over a batch of images, gradients clipped to norm 10, one update.

    Call it with uint8 images [B, H, W, 3], truth [B, G, 4] and classes [B, G];
    it returns the mean losses and their weighted total.
    """
    variables = trainable_variables(detector)
    optimizer.build(variables)

    @tf.function(reduce_retracing=True)
    def step(images: tf.Tensor, truth: tf.Tensor, classes: tf.Tensor) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
        with tf.GradientTape() as tape:
            per_image = [image_losses(detector, images[i], truth[i], classes[i], s) for i in range(images.shape[0])]
            losses = {name: tf.add_n([p[name] for p in per_image]) / len(per_image) for name in per_image[0]}
            total = total_loss(losses, s)
        gradients, _ = tf.clip_by_global_norm(tape.gradient(total, variables), 10.0)
        optimizer.apply_gradients(zip(gradients, variables))
        return losses, total

    return step


def save_detector(detector: fixture_model._FasterRCNN, out_dir: str | Path, labels: Mapping[int, str]) -> Path:
    """Save ``out_dir/saved_model`` (OD API serving signature) and ``out_dir/label_map.pbtxt``; return the former."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    saved_model_dir = out_dir / fixture_model.SAVED_MODEL_DIR
    serve = detector.serve.get_concrete_function()
    tf.saved_model.save(detector, str(saved_model_dir), signatures={"serving_default": serve})
    write_label_map(out_dir / LABEL_MAP_NAME, labels)
    return saved_model_dir
