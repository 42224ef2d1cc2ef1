"""Train minescan's demo detector: a Faster R-CNN on synthetic Sentinel-2 mining scenes, on CPU.

    .venv/bin/python training/train_demo_detector.py --out training/demo_detector
    .venv/bin/python training/train_demo_detector.py --out /tmp/smoke --steps 40 --check-decrease

It generates ``--scenes`` mining scenes (seeds ``SCENE_SEED_BASE`` + 0, 1, ...;
evaluate on any other seed), trains the export fixture's tiny Faster R-CNN
(:mod:`training.faster_rcnn_losses`) on random tiles of them, normalised
with ``--normalisation`` (default: a per-band 2-98 % stretch over each scene)
and radiometrically augmented (:mod:`training.tiles`; ``--no-augment`` turns
it off), with
Adam (linear warm-up, cosine decay), and saves ``OUT/saved_model`` in the TF
Object Detection API serving contract, ``OUT/label_map.pbtxt``
(illegal_mining, legal_mining) and the record of the run:
``OUT/training_log.json`` and ``OUT/training_log.md`` (seed, settings, scene
seeds, losses every ``--log-every`` steps, time).  ``--check-decrease``
exits 1 unless the mean total loss of the last fifth of the steps is below
that of the first fifth (the smoke check).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere in the checkout

import numpy as np  # noqa: E402

from minescan.model.metadata import Normalisation  # noqa: E402
from minescan.synthetic.mining import MINING_LABELS, MiningSpec  # noqa: E402
from training.run_log import record_loss_fifths, run  # noqa: E402
from training.tiles import TrainingScene, render_training_scene, sample_tile  # noqa: E402

SCENE_SEED_BASE = 1000


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="directory for saved_model/, label_map.pbtxt and the training log")
    p.add_argument("--seed", type=int, default=0, help="seed of weights, sampling and augmentation (default 0)")
    p.add_argument("--steps", type=int, default=6000, help="optimizer steps (default 6000)")
    p.add_argument("--batch", type=int, default=4, help="tiles per step (default 4)")
    p.add_argument("--tile", type=int, default=320, help="training tile side in px (default 320)")
    p.add_argument("--scenes", type=int, default=12, help="generated training scenes (default 12)")
    p.add_argument("--scene-size", type=int, default=2048, help="training scene side in px (default 2048)")
    p.add_argument("--learning-rate", type=float, default=1e-3, help="peak Adam learning rate (default 1e-3)")
    p.add_argument("--log-every", type=int, default=50, help="steps per logged loss average (default 50)")
    p.add_argument("--threads", type=int, default=2, help="TensorFlow intra-op threads (default 2)")
    p.add_argument("--normalisation", choices=("stretch", "gain"), default="stretch",
                   help="per-scene percentile stretch (default) or the fixed true-colour gain")
    p.add_argument("--stretch", default="2,98", help="LOW,HIGH stretch percentiles (default 2,98)")
    p.add_argument("--no-augment", dest="augment", action="store_false", help="no radiometric augmentation")
    p.add_argument("--check-decrease", action="store_true", help="exit 1 unless the loss went down (smoke check)")
    return p.parse_args(argv)


def _normalisation(args: argparse.Namespace) -> Normalisation:
    low, high = (float(v) for v in args.stretch.split(","))
    return Normalisation("stretch", low=low, high=high) if args.normalisation == "stretch" else Normalisation("gain")


def _scenes(count: int, size: int, normalisation: Normalisation) -> tuple[list[TrainingScene], list[MiningSpec]]:
    specs = [
        MiningSpec(width=size, height=size, seed=SCENE_SEED_BASE + i, illegal_density=4.0, legal_density=1.5, distractor_density=8.0)
        for i in range(count)
    ]
    return [render_training_scene(spec, normalisation) for spec in specs], specs


def _batch(scenes: list[TrainingScene], args: argparse.Namespace, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    normalisation = _normalisation(args)
    tiles = [sample_tile(scenes[int(rng.integers(len(scenes)))], args.tile, rng, normalisation, args.augment)
             for _ in range(args.batch)]
    return tuple(np.stack([getattr(t, name) for t in tiles]) for name in ("image", "truth", "classes"))


def _markdown(log: dict) -> str:
    names = list(log["losses"][0]["losses"]) if log["losses"] else []
    lines = [
        "# Demo detector training run",
        "",
        f"seed {log['seed']}, {log['steps']} steps x {log['batch']} tiles of {log['tile']} px, "
        f"{len(log['scene_seeds'])} scenes of {log['scene_size']} px (seeds {log['scene_seeds'][0]}..{log['scene_seeds'][-1]}), "
        f"peak learning rate {log['learning_rate']}, normalisation {json.dumps(log['normalisation'])}, "
        f"radiometric augmentation {'on' if log['augment'] else 'off'}, {log['seconds']:.0f} s",
        "",
        "| step | " + " | ".join(names) + " | total |",
        "|---" * (len(names) + 2) + "|",
    ]
    for row in log["losses"]:
        lines.append(f"| {row['step']} | " + " | ".join(f"{row['losses'][n]:.4f}" for n in names) + f" | {row['total']:.4f} |")
    return "\n".join(lines) + "\n"


def train(args: argparse.Namespace) -> dict:
    """Run the training described by ``args``; return the log that is also written beside the model."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    from training.faster_rcnn_losses import (
        DEMO_ARCHITECTURE, TargetSettings, build_detector, image_losses, make_train_step, save_detector,
    )

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    keras.utils.set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    scenes, specs = _scenes(args.scenes, args.scene_size, _normalisation(args))
    print(f"rendered {len(scenes)} scenes in {time.perf_counter() - started:.1f} s: "
          f"{sum(int((s.classes == 1).sum()) for s in scenes)} illegal, {sum(int((s.classes == 2).sum()) for s in scenes)} legal sites", flush=True)

    settings = TargetSettings()
    detector = build_detector(num_classes=len(MINING_LABELS))
    images, truth, classes = _batch(scenes, args, rng)
    image_losses(detector, tf.constant(images[0]), tf.constant(truth[0]), tf.constant(classes[0]), settings)  # build the layers eagerly
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, max(args.steps - args.steps // 20, 1), warmup_target=args.learning_rate, warmup_steps=args.steps // 20
    )
    step = make_train_step(detector, keras.optimizers.Adam(schedule), settings)

    log: dict = {
        "seed": args.seed, "steps": args.steps, "batch": args.batch, "tile": args.tile, "scene_size": args.scene_size,
        "scene_seeds": [s.seed for s in specs], "learning_rate": args.learning_rate,
        "normalisation": _normalisation(args).to_json(), "augment": args.augment,
        "targets": dataclasses.asdict(settings), "architecture": dataclasses.asdict(DEMO_ARCHITECTURE), "losses": [],
    }
    window: list[tuple[dict, float]] = []
    totals: list[float] = []
    train_started = time.perf_counter()
    for number in range(1, args.steps + 1):
        losses, total = step(*(tf.constant(a) for a in _batch(scenes, args, rng)))
        window.append(({k: float(v) for k, v in losses.items()}, float(total)))
        totals.append(float(total))
        if not np.isfinite(totals[-1]):
            raise SystemExit(f"loss is {totals[-1]} at step {number}")
        if number % args.log_every == 0 or number == args.steps:
            row = {
                "step": number,
                "losses": {k: float(np.mean([w[0][k] for w in window])) for k in window[0][0]},
                "total": float(np.mean([w[1] for w in window])),
                "seconds": round(time.perf_counter() - train_started, 1),
            }
            log["losses"].append(row)
            print(f"step {number}: total {row['total']:.4f} " + " ".join(f"{k} {v:.4f}" for k, v in row["losses"].items())
                  + f" ({row['seconds']:.0f} s)", flush=True)
            window = []
    log["seconds"] = time.perf_counter() - started
    log["seconds_training"] = time.perf_counter() - train_started
    out = Path(args.out)
    save_detector(detector, out, MINING_LABELS)
    (out / "training_log.json").write_text(json.dumps(log, indent=1) + "\n")
    (out / "training_log.md").write_text(_markdown(log))
    print(f"saved {out / 'saved_model'} and the training log in {log['seconds']:.0f} s", flush=True)
    record_loss_fifths(log, totals)
    return log


def main(argv: list[str] | None = None) -> int:
    return run(train, _arguments, argv)


if __name__ == "__main__":
    sys.exit(main())
