"""FP32 against INT8: the shipped demo detectors on fresh mining scenes, accuracy and CPU speed in one run.

Run from the repository root (after the README's setup):

    .venv/bin/python benchmarks/precision_speed.py                        # three 4096 px scenes
    .venv/bin/python benchmarks/precision_speed.py --seeds 7 --size 1280 --rounds 1   # a smoke run

It generates the mining scenes (:mod:`minescan.synthetic.mining`, seeds
``--seeds``; the training scenes use 1000 and up) into ``--data`` and,
for ``demo_detector.onnx`` and ``demo_detector_int8.onnx`` alternately,
``--rounds`` times:

- model only: the scene's rendered tiles through the detector, one batch of
  ``--batch`` at a time, with the scan's own concurrency (one 1-thread call per
  core); median seconds per tile over the rounds;
- scan: ``Scanner.scan`` with default options, median tiles/s over the rounds.

Accuracy is scored once per model: precision and recall at the default
threshold and AP@0.5 per class, pooled over the scenes (each scene's boxes are
kept apart).  Speed ratios are INT8 over FP32 in the same run.  INT8 speed
depends on the CPU's integer dot-product instructions, so the table names the
CPU and whether it has AVX-512 VNNI or AVX-VNNI.  Results go to
benchmarks/precision.md.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from datetime import date
from pathlib import Path

import numpy as np

from minescan.scan.bench import warm_up
from minescan.demo import MODELS, shipped_model
from minescan.engine import Detector
from minescan.results.evaluation import Evaluation, evaluate
from minescan.scan.pipeline import ordered_map
from minescan.scan.scanner import Scanner
from minescan.synthetic.mining import MiningSpec, write_mining_scene

from machine import cpu_description  # benchmarks/machine.py, beside this script

HERE = Path(__file__).resolve().parent
DATA = HERE / ".data"
SCENE_SPACING = 1e7  # px added to each scene's boxes when pooling, so scenes never match each other


def make_scenes(seeds: list[int], size: int, folder: Path) -> list[tuple[Path, np.ndarray, np.ndarray]]:
    """Write each seed's scene into ``folder``; return (path, truth boxes, truth classes) per scene."""
    folder.mkdir(parents=True, exist_ok=True)
    scenes = []
    for seed in seeds:
        path = folder / f"mining_{seed}_{size}.tif"
        layout = write_mining_scene(path, MiningSpec(width=size, height=size, seed=seed))
        truth = layout.truth()
        scenes.append((path, truth.boxes, truth.classes))
    return scenes


def rendered_tiles(path: Path, scanner: Scanner, options: dict) -> np.ndarray:
    """The scan's tiles of ``path``, rendered as the scan's plan renders them (uint8 [N, 640, 640, 3])."""
    plan = scanner.plan(path, **options)
    with plan.open_scene() as scene:
        return np.stack([plan.radiometry.apply(t.data, t.nodata) for t in map(scene.read, plan.grid) if not t.empty])


def model_only_seconds(detector: Detector, tiles: np.ndarray, batch: int) -> float:
    """Wall seconds per tile for ``tiles`` through ``detector`` at its own concurrency."""
    batches = [tiles[i : i + batch] for i in range(0, len(tiles), batch)]
    started = time.perf_counter()
    for _ in ordered_map(lambda b: detector.detect(b, 0.5), batches, workers=detector.concurrency, name="model-only"):
        pass
    return (time.perf_counter() - started) / len(tiles)


def pooled_evaluation(per_scene: list[tuple], labels: dict[int, str]) -> Evaluation:
    """One evaluation over all scenes; ``per_scene`` holds (detections, truth boxes, truth classes)."""
    def shifted(boxes: np.ndarray, index: int) -> np.ndarray:
        return np.asarray(boxes, np.float64) + index * SCENE_SPACING

    return evaluate(
        np.concatenate([shifted(d.boxes, i) for i, (d, _, _) in enumerate(per_scene)]),
        np.concatenate([d.scores for d, _, _ in per_scene]),
        np.concatenate([d.classes for d, _, _ in per_scene]),
        np.concatenate([shifted(t, i) for i, (_, t, _) in enumerate(per_scene)]),
        np.concatenate([c for _, _, c in per_scene]),
        labels=labels,
    )


def worst_scene(per_scene: list[tuple], labels: dict[int, str]) -> str:
    """The lowest precision and the lowest recall any one scene had, per class: 'label P / R, ...'."""
    evaluations = [evaluate(d.boxes, d.scores, d.classes, t, c, labels=labels) for d, t, c in per_scene]
    worst = []
    for class_id in sorted({c.class_id for e in evaluations for c in e.classes}):
        mine = [c for e in evaluations for c in e.classes if c.class_id == class_id]
        worst.append(f"{min(c.precision for c in mine):.3f} / {min(c.recall for c in mine):.3f}")
    return ", ".join(worst)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="101,102,103", help="scene seeds, comma-separated (default 101,102,103)")
    parser.add_argument("--size", type=int, default=4096, help="scene side in px (default 4096)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per model (default 3)")
    parser.add_argument("--batch", type=int, default=8, help="tiles per inference call (default 8)")
    parser.add_argument("--out", default=str(HERE / "precision.md"), help="Markdown results file")
    parser.add_argument("--data", default=str(DATA), help="folder for the generated scenes (default benchmarks/.data)")
    args = parser.parse_args()
    scenes = make_scenes([int(s) for s in args.seeds.split(",")], args.size, Path(args.data))
    options = dict(bands=(3, 2, 1), batch=args.batch)
    scanners = {p: Scanner(shipped_model(p), backend="cpu") for p in MODELS}
    detectors = {p: s.detector for p, s in scanners.items()}
    tiles = [rendered_tiles(path, scanners["fp32"], options) for path, _, _ in scenes]
    model_s: dict[str, list[float]] = {p: [] for p in MODELS}
    scan_rate: dict[str, list[float]] = {p: [] for p in MODELS}
    found: dict[str, list] = {p: [] for p in MODELS}
    for detector in detectors.values():
        warm_up(detector, args.batch, 640)
    for round_ in range(args.rounds):
        for p, detector in detectors.items():
            model_s[p].append(statistics.fmean(model_only_seconds(detector, t, args.batch) for t in tiles))
            results = [scanners[p].scan(path, **options) for path, _, _ in scenes]
            scan_rate[p].append(sum(r.tiles for r in results) / sum(r.seconds for r in results))
            if round_ == 0:
                found[p] = [(r.detections, boxes, classes) for r, (_, boxes, classes) in zip(results, scenes)]
            print(f"round {round_ + 1} {p}: model only {model_s[p][-1] * 1e3:.1f} ms/tile, scan {scan_rate[p][-1]:.1f} tiles/s", flush=True)
    labels = dict(detectors["fp32"].metadata.labels)
    scores = {p: pooled_evaluation(found[p], labels) for p in MODELS}
    rows = []
    for p, score in scores.items():
        per_class = " | ".join(f"{c.precision:.3f} / {c.recall:.3f} / {c.average_precision:.3f}" for c in score.classes)
        per_class += " | " + worst_scene(found[p], labels)
        ms, rate = statistics.median(model_s[p]), statistics.median(scan_rate[p])
        speed = statistics.median(model_s["fp32"]) / ms
        rows.append(f"| {p.upper()} `{MODELS[p]}` | {per_class} | {score.mean_average_precision:.3f} | {ms * 1e3:.1f} | "
                    f"{speed:.2f}x | {rate:.1f} | {rate / statistics.median(scan_rate['fp32']):.2f}x |")
    classes = scores["fp32"].classes
    class_heads = " | ".join(f"{c.label} P / R / AP" for c in classes) + " | worst scene P / R per class"
    text = (
        f"Measured {date.today().isoformat()} on {cpu_description()}, {detectors['fp32'].concurrency} concurrent 1-thread calls, "
        f"Python {platform.python_version()}; {len(scenes)} fresh {args.size} x {args.size} mining scenes (seeds {args.seeds}), "
        f"{sum(len(t) for t in tiles)} tiles of 640 px, batch {args.batch}, medians of {args.rounds} alternating rounds.\n\n"
        f"| model | {class_heads} | mAP@0.5 | model only ms/tile | speed vs FP32 | scan tiles/s | scan vs FP32 |\n"
        f"|---|{'---|' * (len(classes) + 1)}---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
