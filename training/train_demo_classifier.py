"""Train minescan's demo tile classifier (mining / other, 64 px windows) on synthetic Sentinel-2 scenes, on CPU.

    .venv/bin/python training/train_demo_classifier.py --arch small_cnn --out training/demo_classifier   # 7.5 min, 2 cores
    .venv/bin/python training/train_demo_classifier.py --arch mobilenet_v2 --out /tmp/demo_classifier/mobilenet_v2 --steps 2400
    .venv/bin/python training/train_demo_classifier.py --arch efficientnet_v2 --out /tmp/demo_classifier/efficientnet_v2 --steps 1000
    .venv/bin/python training/train_demo_classifier.py --arch small_cnn --out /tmp/smoke --steps 40 --scenes 1 \\
        --scene-size 512 --batch 16 --check-decrease                                                    # smoke run

It generates ``--scenes`` mining scenes (seeds ``SCENE_SEED_BASE`` + 0, 1,
...; the demo detector's scenes start at 1000, fresh evaluation scenes use
any other seed) and trains a Keras 3 classifier with two classes, ``other``
and ``mining`` (softmax [N, 2]), on ``WINDOW`` px windows of them
(:mod:`training.classifier_windows`): labels from
:func:`minescan.results.window_truth.window_labels`, 40 % positives, hard
negatives on look-alikes, beside mining sites and on bright background,
per-band 2-98 % stretch over each scene and radiometric augmentation as for
the demo detector, random flips and 90 degree rotations.  Architectures
(``--arch``), all taking [N, 64, 64, 3] float:

- ``small_cnn``: a stride-2 stem and three stages of two Conv-BN-ReLU
  blocks with max pooling, global average pooling, softmax;
  ``Rescaling(1/255)`` inside, so it takes 0-255;
- ``mobilenet_v2``: ``keras.applications.MobileNetV2`` (``--alpha``,
  ``weights=None``, batch-norm momentum 0.99) + global pooling + softmax.
  Its preprocessing ``x / 127.5 - 1`` is *not* in the model: it is trained
  on preprocessed input and the exporter bakes the step in (``minescan
  export --preprocess mobilenet_v2``, or ``auto``, which recognises it);
- ``efficientnet_v2``: ``keras.applications.EfficientNetV2B0``
  (``weights=None``), whose rescaling is inside: takes 0-255.

Adam with a linear warm-up and cosine decay; ``OUT/model.keras`` and the
record of the run, ``OUT/training_log.json`` and ``OUT/training_log.md``
(seed, settings, scene seeds, loss and batch accuracy every ``--log-every``
steps, parameters, time).  ``--check-decrease`` exits 1 unless the mean loss
of the last fifth of the steps is below that of the first fifth.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere in the checkout

import numpy as np  # noqa: E402

from minescan.model.metadata import Normalisation  # noqa: E402
from minescan.synthetic.mining import MiningSpec  # noqa: E402
from training.run_log import record_loss_fifths, run  # noqa: E402
from training.classifier_windows import LABELS, WINDOW, WindowMix, WindowScene, render_window_scene, sample_windows  # noqa: E402

SCENE_SEED_BASE = 3000
ARCHITECTURES = ("small_cnn", "mobilenet_v2", "efficientnet_v2")
# The input step each architecture expects outside the model (what the exporter's --preprocess bakes in).
PREPROCESS = {"small_cnn": "none", "mobilenet_v2": "mobilenet_v2", "efficientnet_v2": "none"}
BN_MOMENTUM = 0.99  # MobileNetV2's batch norms (see build_model)
SMALL_CNN_WIDTHS = (24, 32, 64, 128)  # stem, then three stages of two convolutions


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", choices=ARCHITECTURES, default="small_cnn", help="architecture (default small_cnn)")
    p.add_argument("--out", required=True, help="directory for model.keras and the training log")
    p.add_argument("--seed", type=int, default=0, help="seed of weights, sampling and augmentation (default 0)")
    p.add_argument("--steps", type=int, default=2000, help="optimizer steps (default 2000)")
    p.add_argument("--epochs", type=int, default=None,
                   help="alternative to --steps: epochs of --epoch-windows windows each")
    p.add_argument("--epoch-windows", type=int, default=16384, help="windows per epoch for --epochs (default 16384)")
    p.add_argument("--batch", type=int, default=64, help="windows per step (default 64)")
    p.add_argument("--scenes", type=int, default=24, help="generated training scenes (default 24)")
    p.add_argument("--scene-size", type=int, default=2048, help="training scene side in px (default 2048)")
    p.add_argument("--alpha", type=float, default=0.5, help="MobileNetV2 width multiplier (default 0.5)")
    p.add_argument("--learning-rate", type=float, default=2e-3, help="peak Adam learning rate (default 2e-3)")
    p.add_argument("--positive", type=float, default=0.4, help="share of positive windows per batch (default 0.4)")
    p.add_argument("--distractor", type=float, default=0.2,
                   help="share of hard negatives on look-alikes (default 0.2)")
    p.add_argument("--beside", type=float, default=0.1,
                   help="share of hard negatives beside mining sites (default 0.1)")
    p.add_argument("--bright", type=float, default=0.15,
                   help="share of bright hard negatives (the brightest of 24 random negatives; default 0.15); "
                        "the rest are windows anywhere")
    p.add_argument("--log-every", type=int, default=100, help="steps per logged loss average (default 100)")
    p.add_argument("--threads", type=int, default=2, help="TensorFlow intra-op threads (default 2)")
    p.add_argument("--stretch", default="2,98", help="LOW,HIGH stretch percentiles (default 2,98)")
    p.add_argument("--no-augment", dest="augment", action="store_false", help="no radiometric augmentation")
    p.add_argument("--check-decrease", action="store_true", help="exit 1 unless the loss went down (smoke check)")
    args = p.parse_args(argv)
    if args.epochs is not None:
        args.steps = max(1, args.epochs * args.epoch_windows // args.batch)
    return args


def _normalisation(args: argparse.Namespace) -> Normalisation:
    low, high = (float(v) for v in args.stretch.split(","))
    return Normalisation("stretch", low=low, high=high)


def scene_specs(count: int, size: int, base: int = SCENE_SEED_BASE) -> list[MiningSpec]:
    """The training scenes: seeds ``base`` + 0 .. count - 1, denser in sites than the defaults (as the detector's)."""
    return [MiningSpec(width=size, height=size, seed=base + i, illegal_density=4.0, legal_density=1.5, distractor_density=8.0)
            for i in range(count)]


def preprocess(arch: str, images: np.ndarray) -> np.ndarray:
    """What the model of ``arch`` takes for uint8 windows: 0-255 float, or ``x / 127.5 - 1`` for MobileNetV2."""
    x = images.astype(np.float32)
    return x / 127.5 - 1.0 if PREPROCESS[arch] == "mobilenet_v2" else x


def build_model(arch: str, alpha: float = 0.5):
    """The Keras 3 classifier of ``arch``: [N, WINDOW, WINDOW, 3] float -> softmax [N, len(LABELS)]."""
    import keras
    from keras import layers

    shape = (WINDOW, WINDOW, 3)
    if arch == "small_cnn":
        inputs = keras.Input(shape, name="image")
        x = layers.Rescaling(1 / 255, name="rescale")(inputs)
        # Stem: a 5x5 convolution at stride 2 (20 m cells; the smallest pits are 20 px), then Conv-BN-ReLU pairs.
        x = layers.Conv2D(SMALL_CNN_WIDTHS[0], 5, strides=2, padding="same", use_bias=False, name="stem")(x)
        x = layers.BatchNormalization(name="stem_bn")(x)
        x = layers.ReLU(name="stem_relu")(x)
        for stage, width in enumerate(SMALL_CNN_WIDTHS[1:], start=1):
            for conv in range(2):
                x = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"conv{stage}_{conv}")(x)
                x = layers.BatchNormalization(name=f"bn{stage}_{conv}")(x)
                x = layers.ReLU(name=f"relu{stage}_{conv}")(x)
            if stage < len(SMALL_CNN_WIDTHS) - 1:
                x = layers.MaxPooling2D(2, name=f"pool{stage}")(x)
        x = layers.GlobalAveragePooling2D(name="pool")(x)
    elif arch in ("mobilenet_v2", "efficientnet_v2"):
        # The application stays one nested layer under its own name (mobilenetv2_0.35_64, efficientnetv2-b0),
        # which is how `minescan export --preprocess auto` recognises what input it was trained on.
        if arch == "mobilenet_v2":
            base = keras.applications.MobileNetV2(input_shape=shape, alpha=alpha, weights=None, include_top=False)
            # Its batch norms keep moving statistics with momentum 0.999, made for long ImageNet runs: after a
            # couple of thousand steps they still hold a fifth of their initial values and the trained model
            # answers the same for every window.  0.99 settles within a few hundred steps.
            for layer in base.layers:
                if isinstance(layer, layers.BatchNormalization):
                    layer.momentum = BN_MOMENTUM
        else:
            base = keras.applications.EfficientNetV2B0(input_shape=shape, weights=None, include_top=False)
        inputs = keras.Input(shape, name="image")
        x = layers.GlobalAveragePooling2D(name="pool")(base(inputs))
    else:
        raise ValueError(f"unknown architecture {arch!r}; one of {', '.join(ARCHITECTURES)}")
    x = layers.Dropout(0.2, name="dropout")(x)
    outputs = layers.Dense(len(LABELS), activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=f"{arch}_mining_classifier")


def _markdown(log: dict) -> str:
    mix = log["mix"]
    lines = [
        f"# Demo classifier training run ({log['arch']})",
        "",
        f"{log['arch']} ({log['parameters']:,} parameters{', alpha ' + str(log['alpha']) if log['arch'] == 'mobilenet_v2' else ''}; "
        f"input {log['input']}), classes {', '.join(log['labels'])}; seed {log['seed']}, {log['steps']} steps x {log['batch']} "
        f"windows of {log['window']} px, {len(log['scene_seeds'])} scenes of {log['scene_size']} px "
        f"(seeds {log['scene_seeds'][0]}..{log['scene_seeds'][-1]}), peak learning rate {log['learning_rate']} (Adam, warm-up, "
        f"cosine decay), normalisation {json.dumps(log['normalisation'])}, radiometric augmentation "
        f"{'on' if log['augment'] else 'off'}, flips and 90 degree rotations; windows per batch: {mix['positive']:.0%} positive, "
        f"{mix['distractor']:.0%} on look-alikes, {mix['beside']:.0%} beside mining sites, {mix['bright']:.0%} bright negatives, "
        f"the rest anywhere; "
        f"{log['seconds']:.0f} s ({log['seconds_training']:.0f} s training, {log['threads']} threads)",
        "",
        "| step | loss | batch accuracy | seconds |",
        "|---|---|---|---|",
    ]
    for row in log["losses"]:
        lines.append(f"| {row['step']} | {row['loss']:.4f} | {row['accuracy']:.3f} | {row['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def train(args: argparse.Namespace) -> dict:
    """Run the training described by ``args``; return the log that is also written beside the model."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", str(args.threads))
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", str(args.threads))
    import keras
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    keras.utils.set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    normalisation = _normalisation(args)
    mix = WindowMix(args.positive, args.distractor, args.beside, args.bright)
    started = time.perf_counter()
    specs = scene_specs(args.scenes, args.scene_size)
    scenes: list[WindowScene] = [render_window_scene(spec, normalisation) for spec in specs]
    print(f"rendered {len(scenes)} scenes in {time.perf_counter() - started:.1f} s: "
          f"{sum(len(s.scene.boxes) for s in scenes)} mining sites, {sum(len(s.distractors) for s in scenes)} look-alikes",
          flush=True)

    model = build_model(args.arch, args.alpha)
    warmup = min(args.steps // 20, 200)
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, max(args.steps - warmup, 1), warmup_target=args.learning_rate, warmup_steps=warmup
    )
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"], jit_compile=False)
    log: dict = {
        "arch": args.arch, "labels": list(LABELS), "window": WINDOW, "parameters": int(model.count_params()),
        "alpha": args.alpha if args.arch == "mobilenet_v2" else None,
        "input": "x / 127.5 - 1 (mobilenet_v2 preprocess_input, outside the model)" if PREPROCESS[args.arch] != "none"
        else "0-255 float (rescaling inside the model)",
        "preprocess": PREPROCESS[args.arch], "seed": args.seed, "steps": args.steps, "batch": args.batch,
        "scene_size": args.scene_size, "scene_seeds": [s.seed for s in specs], "learning_rate": args.learning_rate,
        "warmup_steps": warmup, "normalisation": normalisation.to_json(), "augment": args.augment,
        "mix": {"positive": mix.positive, "distractor": mix.distractor, "beside": mix.beside, "bright": mix.bright}, "threads": args.threads,
        "losses": [],
    }
    window_losses: list[tuple[float, float]] = []
    totals: list[float] = []
    train_started = time.perf_counter()
    for number in range(1, args.steps + 1):
        images, labels, _ = sample_windows(scenes, args.batch, rng, normalisation, mix, args.augment)
        loss, accuracy = model.train_on_batch(preprocess(args.arch, images), labels)
        window_losses.append((float(loss), float(accuracy)))
        totals.append(float(loss))
        if not np.isfinite(totals[-1]):
            raise SystemExit(f"loss is {totals[-1]} at step {number}")
        if number % args.log_every == 0 or number == args.steps:
            row = {"step": number, "loss": float(np.mean([w[0] for w in window_losses])),
                   "accuracy": float(np.mean([w[1] for w in window_losses])),
                   "seconds": round(time.perf_counter() - train_started, 1)}
            log["losses"].append(row)
            print(f"step {number}: loss {row['loss']:.4f} accuracy {row['accuracy']:.3f} ({row['seconds']:.0f} s)", flush=True)
            window_losses = []
            model.reset_metrics()
    log["seconds"] = time.perf_counter() - started
    log["seconds_training"] = time.perf_counter() - train_started
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / "model.keras")
    # Saved again as loaded for inference, without the optimizer's state (a third of the file for Adam's moments).
    keras.models.load_model(out / "model.keras", compile=False).save(out / "model.keras")
    (out / "training_log.json").write_text(json.dumps(log, indent=1) + "\n")
    (out / "training_log.md").write_text(_markdown(log))
    print(f"saved {out / 'model.keras'} ({log['parameters']:,} parameters) and the training log in {log['seconds']:.0f} s",
          flush=True)
    record_loss_fifths(log, totals)
    return log


def main(argv: list[str] | None = None) -> int:
    return run(train, _arguments, argv)


if __name__ == "__main__":
    sys.exit(main())
