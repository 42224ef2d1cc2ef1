"""Demo tile classifiers compared: small CNN, MobileNetV2, EfficientNetV2-B0 on fresh mining scenes, accuracy and CPU speed.

Run from the repository root (after the README's setup, with the export extra
for Keras models), once the models are trained
(``training/train_demo_classifier.py``):

    .venv/bin/python benchmarks/classifier_architectures.py \\
        --keras training/demo_classifier /tmp/demo_classifier/mobilenet_v2 /tmp/demo_classifier/efficientnet_v2 \\
        --onnx demo_classifier.onnx demo_classifier_int8.onnx
    .venv/bin/python benchmarks/classifier_architectures.py --keras training/demo_classifier --seeds 777 --size 1024 \\
        --train-scenes 1 --out /tmp/smoke.md                               # a smoke run

It generates the fresh scenes (:func:`minescan.synthetic.mining.write_mining_scene`,
seeds ``--seeds``, default 777-781, never used in training: the classifier's
training scenes start at 3000, the detector's at 1000) into ``--data`` and
renders each as ``minescan scan`` renders it for a model trained with a
per-band 2-98 % stretch: bands 3, 2, 1, the stretch measured on the scene's
statistics sample (:meth:`minescan.raster.scene.Scene.statistics_sample`).
Windows of 64 px every ``--stride`` px (default 32,
:func:`minescan.results.window_truth.grid_windows`) are labelled by
:func:`~minescan.results.window_truth.window_labels` (either mining class is
positive; ambiguous windows are left out and counted).  Per model:

- parameters, and on the fresh scenes: accuracy, precision, recall and F1 of
  the ``mining`` class at probability >= ``--threshold`` (0.5), ROC AUC
  (rank-based, ties averaged), recall on windows of illegal and of legal sites,
  and the false-positive rate on windows over look-alikes (bare fields,
  quarries, urban blocks);
- accuracy on the training scenes' own grid windows (the first
  ``--train-scenes`` scenes of the model's training log, re-rendered without
  augmentation): a held-out split of windows from scenes whose sites were
  all seen in training, the estimate that flatters a model, beside the
  fresh-scene one;
- ms per window on the CPU: batches of ``--batch`` (32) after a warm-up,
  median of ``--rounds`` timed passes of ``--timed-batches`` batches; Keras
  models with 2 TensorFlow threads, ONNX models (``--onnx``, through
  :func:`minescan.engine.load_detector` and ``classify``, which take uint8 and
  bake the preprocessing in) on one ONNX Runtime session with 2 threads.

Keras models are given as the training output folders (``model.keras`` and
``training_log.json``, which says the architecture and the input step:
MobileNetV2 takes ``x / 127.5 - 1``).  Results go to
benchmarks/classifier_architectures.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Callable

import numpy as np
from rasterio.windows import Window

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # training/ of the checkout

from minescan.raster.radiometry import percentile_stretch  # noqa: E402
from minescan.raster.scene import Scene  # noqa: E402
from minescan.results.window_truth import NEGATIVE, POSITIVE, grid_windows, window_labels  # noqa: E402
from minescan.synthetic.mining import MiningSpec, write_mining_scene  # noqa: E402

from training.classifier_windows import WINDOW, cut_windows  # noqa: E402

from machine import cpu_description  # noqa: E402  benchmarks/machine.py, beside this script

DATA = HERE / ".data"
THREADS = 2


@dataclass
class WindowSet:
    """Rendered windows of some scenes with their truth: images uint8 [N, 64, 64, 3], labels [N] (0/1, no ambiguous)."""

    name: str
    images: np.ndarray
    labels: np.ndarray
    illegal: np.ndarray  # bool [N]: positive because of an illegal site
    legal: np.ndarray  # bool [N]: positive because of a legal site
    lookalike: np.ndarray  # bool [N]: negative window over a look-alike
    ambiguous: int  # windows left out
    scenes: int


def parse_seeds(text: str) -> list[int]:
    """'777-781' or '777,778' to a list of seeds."""
    seeds: list[int] = []
    for part in text.split(","):
        if "-" in part:
            first, last = (int(v) for v in part.split("-"))
            seeds.extend(range(first, last + 1))
        else:
            seeds.append(int(part))
    return seeds


def render_as_scan(path: Path, low: float = 2.0, high: float = 98.0) -> np.ndarray:
    """The scene at ``path`` rendered as a scan renders it for a stretch model (bands 3, 2, 1): uint8 [H, W, 3]."""
    with Scene(str(path), bands=(3, 2, 1)) as scene:
        sample = scene.statistics_sample()
        radiometry = percentile_stretch(sample.data, ~sample.nodata, low, high)
        data, nodata = scene.read_window(Window(0, 0, scene.width, scene.height))
    return radiometry.apply(data, nodata)


def label_windows(windows: np.ndarray, boxes: np.ndarray, classes: np.ndarray, lookalikes: np.ndarray):
    """(labels [M] with -1 ambiguous, illegal [M], legal [M], look-alike [M]) for grid ``windows``."""
    labels = window_labels(windows, boxes)
    illegal = window_labels(windows, boxes[classes == 1]) == POSITIVE
    legal = window_labels(windows, boxes[classes == 2]) == POSITIVE
    on_lookalike = (window_labels(windows, lookalikes) != NEGATIVE) & (labels == NEGATIVE)
    return labels, illegal, legal, on_lookalike


def window_set(name: str, scenes: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]], stride: int) -> WindowSet:
    """Grid windows of rendered scenes, each (rgb [H, W, 3], truth boxes, truth classes, look-alike boxes)."""
    parts, ambiguous = [], 0
    for rgb, boxes, classes, lookalikes in scenes:
        windows = grid_windows(rgb.shape[1], rgb.shape[0], WINDOW, stride)
        labels, illegal, legal, on_lookalike = label_windows(windows, boxes, classes, lookalikes)
        keep = labels >= 0
        ambiguous += int((~keep).sum())
        parts.append((cut_windows(rgb, windows[keep]), labels[keep], illegal[keep], legal[keep], on_lookalike[keep]))
    images, labels, illegal, legal, on_lookalike = (np.concatenate(p) for p in zip(*parts))
    return WindowSet(name, images, labels.astype(np.int32), illegal, legal, on_lookalike, ambiguous, len(scenes))


def fresh_scenes(seeds: list[int], size: int, folder: Path) -> list[tuple]:
    """Write each fresh scene (default densities, as ``minescan demo``) and render it as a scan does."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for seed in seeds:
        path = folder / f"mining_{seed}_{size}.tif"
        layout = write_mining_scene(path, MiningSpec(width=size, height=size, seed=seed))
        truth = layout.truth()
        lookalikes = np.array([s.box for s in layout.distractors()], np.float64).reshape(-1, 4)
        out.append((render_as_scan(path), truth.boxes, truth.classes, lookalikes))
    return out


def training_scenes(log: dict, count: int) -> list[tuple]:
    """The first ``count`` scenes of a training log, rendered as the training renders them, unaugmented."""
    from minescan.model.metadata import Normalisation
    from training.classifier_windows import render_scene_rgb, render_window_scene
    from training.train_demo_classifier import scene_specs

    normalisation = Normalisation.from_json(log["normalisation"])
    base, size = log["scene_seeds"][0], log["scene_size"]
    out = []
    for spec in scene_specs(count, size, base):
        scene = render_window_scene(spec, normalisation)
        out.append((render_scene_rgb(scene, normalisation), scene.scene.boxes, scene.scene.classes, scene.distractors))
    return out


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve: the Mann-Whitney U statistic from ranks (ties get their average rank)."""
    labels = labels.astype(bool)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if not positives or not negatives:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores), np.float64)
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], len(scores)]
    average = (starts + ends + 1) / 2.0  # 1-based average rank of each tie group
    ranks[order] = np.repeat(average, ends - starts)
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def scores_of(probabilities: np.ndarray, windows: WindowSet, threshold: float) -> dict:
    predicted = probabilities >= threshold
    truth = windows.labels.astype(bool)
    tp, fp = int((predicted & truth).sum()), int((predicted & ~truth).sum())
    fn, tn = int((~predicted & truth).sum()), int((~predicted & ~truth).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {
        "accuracy": (tp + tn) / len(truth), "precision": precision, "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "auc": roc_auc(probabilities, truth), "tp": tp, "fp": fp, "fn": fn, "tn": tn,
        "recall_illegal": float(predicted[windows.illegal].mean()) if windows.illegal.any() else float("nan"),
        "recall_legal": float(predicted[windows.legal].mean()) if windows.legal.any() else float("nan"),
        "fpr_lookalike": float(predicted[windows.lookalike].mean()) if windows.lookalike.any() else float("nan"),
        "lookalike_windows": int(windows.lookalike.sum()),
    }


@dataclass
class Model:
    """A model under test: ``predict`` uint8 windows -> P(mining) [N]; ``timed`` the same at the timing batch."""

    name: str
    kind: str  # "Keras" or "ONNX"
    parameters: int | None
    predict: Callable[[np.ndarray], np.ndarray]
    log: dict | None
    path: str


def keras_model(folder: Path) -> Model:
    """A training output folder (model.keras, training_log.json) as a :class:`Model` (2 TensorFlow threads)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    from training.train_demo_classifier import preprocess

    try:
        tf.config.threading.set_intra_op_parallelism_threads(THREADS)
        tf.config.threading.set_inter_op_parallelism_threads(THREADS)
    except RuntimeError:  # already initialised by an earlier model
        pass
    log = json.loads((folder / "training_log.json").read_text())
    model = keras.models.load_model(folder / "model.keras", compile=False)
    arch = log["arch"]
    mining = log["labels"].index("mining")

    def predict(images: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict_on_batch(preprocess(arch, images)))[:, mining]

    name = f"{arch}" + (f" (alpha {log['alpha']})" if log.get("alpha") else "")
    return Model(name, "Keras", int(model.count_params()), predict, log, str(folder / "model.keras"))


def onnx_model(path: Path) -> Model:
    """An exported classifier (uint8 input, preprocessing inside) through minescan's engine, one 2-thread session."""
    from minescan.engine import load_detector

    detector = load_detector(path, backend="cpu", threads=THREADS, workers=1)
    labels = dict(detector.metadata.labels) if getattr(detector, "metadata", None) is not None else {}
    names = [labels[k] for k in sorted(labels)] if labels else []
    mining = names.index("mining") if "mining" in names else 1

    def predict(images: np.ndarray) -> np.ndarray:
        return detector.classify(np.ascontiguousarray(images))[:, mining]

    return Model(path.name, "ONNX", None, predict, None, str(path))  # parameters: see its Keras source


def predict_all(model: Model, images: np.ndarray, batch: int = 256) -> np.ndarray:
    return np.concatenate([model.predict(images[i:i + batch]) for i in range(0, len(images), batch)])


def ms_per_window(model: Model, images: np.ndarray, batch: int, batches: int, rounds: int) -> float:
    """Median over ``rounds`` of the ms per window of ``batches`` batches of ``batch`` windows, after a warm-up."""
    chunks = [images[(i * batch) % max(len(images) - batch, 1):][:batch] for i in range(batches)]
    for chunk in chunks[:3]:
        model.predict(chunk)
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        for chunk in chunks:
            model.predict(chunk)
        times.append((time.perf_counter() - started) / (batches * batch) * 1e3)
    return statistics.median(times)


def _f(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keras", nargs="*", default=[], help="training output folders (model.keras + training_log.json)")
    parser.add_argument("--onnx", nargs="*", default=[], help="exported classifiers (.onnx), e.g. FP32 and INT8")
    parser.add_argument("--seeds", default="777-781", help="fresh scene seeds: FIRST-LAST or comma-separated (default 777-781)")
    parser.add_argument("--size", type=int, default=4096, help="fresh scene side in px (default 4096)")
    parser.add_argument("--stride", type=int, default=32, help="window stride in px (default 32)")
    parser.add_argument("--threshold", type=float, default=0.5, help="P(mining) threshold (default 0.5)")
    parser.add_argument("--train-scenes", type=int, default=2,
                        help="training scenes whose grid windows give the held-out-split accuracy (default 2; 0: none)")
    parser.add_argument("--batch", type=int, default=32, help="windows per timed call (default 32)")
    parser.add_argument("--timed-batches", type=int, default=30, help="batches per timed pass (default 30)")
    parser.add_argument("--rounds", type=int, default=3, help="timed passes per model (default 3)")
    parser.add_argument("--out", default=str(HERE / "classifier_architectures.md"), help="Markdown results file")
    parser.add_argument("--json", default=None, help="also write the numbers as JSON here")
    parser.add_argument("--data", default=str(DATA), help="folder for the generated scenes (default benchmarks/.data)")
    args = parser.parse_args(argv)
    if not args.keras and not args.onnx:
        parser.error("give at least one model: --keras FOLDER ... and/or --onnx MODEL.onnx ...")

    started = time.perf_counter()
    seeds = parse_seeds(args.seeds)
    fresh = window_set("fresh", fresh_scenes(seeds, args.size, Path(args.data)), args.stride)
    print(f"fresh scenes {seeds}: {len(fresh.labels)} windows ({int(fresh.labels.sum())} mining), "
          f"{fresh.ambiguous} ambiguous left out ({time.perf_counter() - started:.0f} s)", flush=True)

    models = [keras_model(Path(p)) for p in args.keras] + [onnx_model(Path(p)) for p in args.onnx]
    held_out: dict[tuple, WindowSet] = {}
    results = []
    for model in models:
        t0 = time.perf_counter()
        probabilities = predict_all(model, fresh.images)
        row = {"name": model.name, "kind": model.kind, "path": model.path, "parameters": model.parameters,
               "fresh": scores_of(probabilities, fresh, args.threshold)}
        if model.log is not None and args.train_scenes > 0:
            key = (model.log["scene_seeds"][0], model.log["scene_size"], json.dumps(model.log["normalisation"]))
            if key not in held_out:
                held_out[key] = window_set("training", training_scenes(model.log, args.train_scenes), args.stride)
            split = held_out[key]
            row["train_split"] = scores_of(predict_all(model, split.images), split, args.threshold)
            row["train_split"]["seeds"] = model.log["scene_seeds"][:args.train_scenes]
            row["train_split"]["windows"] = int(len(split.labels))
            row["seconds_training"] = model.log.get("seconds")  # wall time of the whole run, scene rendering included
            row["steps"], row["train_batch"] = model.log["steps"], model.log["batch"]
        row["ms_per_window"] = ms_per_window(model, fresh.images, args.batch, args.timed_batches, args.rounds)
        results.append(row)
        s = row["fresh"]
        print(f"{model.kind} {model.name}: F1 {s['f1']:.4f} P {s['precision']:.4f} R {s['recall']:.4f} AUC {s['auc']:.4f} "
              f"acc {s['accuracy']:.4f}, training-split acc {_f(row.get('train_split', {}).get('accuracy'), 4)} F1 {_f(row.get('train_split', {}).get('f1'), 4)}, "
              f"{row['ms_per_window']:.2f} ms/window ({time.perf_counter() - t0:.0f} s)", flush=True)

    text = report(results, fresh, seeds, args)
    Path(args.out).write_text(text)
    if args.json:
        counts = {"windows": len(fresh.labels), "positives": int(fresh.labels.sum()), "illegal": int(fresh.illegal.sum()),
                  "legal": int(fresh.legal.sum()), "lookalike": int(fresh.lookalike.sum()), "ambiguous": fresh.ambiguous}
        Path(args.json).write_text(json.dumps({"date": date.today().isoformat(), "machine": cpu_description(),
                                               "arguments": sys.argv[1:], "fresh": counts, "results": results}, indent=1) + "\n")
    print(text)
    return 0


def report(results: list[dict], fresh: WindowSet, seeds: list[int], args: argparse.Namespace) -> str:
    cmd = " ".join(sys.argv[1:])
    positives = int(fresh.labels.sum())
    lines = [
        f"Measured {date.today().isoformat()} on {cpu_description()}, Python {platform.python_version()}, "
        f"{THREADS} threads per model (TensorFlow intra/inter-op for Keras, ONNX Runtime intra-op for ONNX).",
        "",
        f"Fresh scenes: {len(seeds)} mining scenes of {args.size} x {args.size} px never seen in training "
        f"(seeds {args.seeds}, default densities), rendered as `minescan scan` renders them for a stretch model "
        f"(bands 3,2,1, per-band 2-98 % stretch on the scene's statistics sample). Windows of {WINDOW} px every "
        f"{args.stride} px: {len(fresh.labels)} scored ({positives} mining: {int(fresh.illegal.sum())} on illegal and "
        f"{int(fresh.legal.sum())} on legal sites; {len(fresh.labels) - positives} other, "
        f"{int(fresh.lookalike.sum())} of them over look-alikes), {fresh.ambiguous} ambiguous left out "
        f"(`minescan.results.window_truth`). Mining = P(mining) >= {args.threshold}; AUC is rank-based ROC AUC.",
        "",
        "| model | parameters | F1 | precision | recall | accuracy | ROC AUC | recall illegal / legal | "
        "FP rate on look-alikes | training-split accuracy / F1 | ms/window (batch "
        f"{args.batch}) | training |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results:
        s, t = row["fresh"], row.get("train_split")
        training = (f"{row['steps']} steps x {row['train_batch']}, {row['seconds_training'] / 60:.1f} min wall"
                    if row.get("steps") else "-")
        parameters = f"{row['parameters']:,}" if row["parameters"] is not None else "-"
        lines.append(
            f"| {row['kind']} {row['name']} | {parameters} | {s['f1']:.4f} | {s['precision']:.4f} | {s['recall']:.4f} | "
            f"{s['accuracy']:.4f} | {s['auc']:.4f} | {_f(s['recall_illegal'])} / {_f(s['recall_legal'])} | "
            f"{_f(s['fpr_lookalike'])} | {_f(t['accuracy'], 4) + ' / ' + _f(t['f1'], 4) if t else '-'} | {row['ms_per_window']:.2f} | {training} |"
        )
    onnx_rows = [r for r in results if r["kind"] == "ONNX"]
    quantized = [r for r in onnx_rows[1:] if "int8" in r["name"].lower()]
    if onnx_rows and quantized:
        base = onnx_rows[0]
        lines += ["", f"INT8 against `{base['name']}` (the first ONNX model given): " + ", ".join(
            f"`{r['name']}` F1 {r['fresh']['f1'] - base['fresh']['f1']:+.4f}, speed {base['ms_per_window'] / r['ms_per_window']:.2f}x"
            for r in quantized) + "."]
    splits = [r["train_split"] for r in results if r.get("train_split")]
    if splits:
        lines += ["", f"Training-split accuracy: the {splits[0]['windows']} grid windows (stride {args.stride}, ambiguous "
                  f"left out) of training scenes {', '.join(map(str, splits[0]['seeds']))}, rendered without augmentation: "
                  "windows the model never saw as such, but of sites it trained on, the split a random window split "
                  "would give. Compare it with the fresh-scene accuracy and F1."]
    lines += ["", "Command:", "", "```bash", f".venv/bin/python benchmarks/classifier_architectures.py {cmd}", "```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
