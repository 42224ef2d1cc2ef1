"""New imagery: detectors scored under standard perturbations of fresh scenes, with the domain-shift guard.

Run from the repository root (after the README's setup):

    .venv/bin/python benchmarks/robustness.py                                     # the shipped demo detector
    .venv/bin/python benchmarks/robustness.py --model old.onnx --add-statistics   # any model; give it the guard first

It writes fresh mining scenes (``--seeds``, ``--size``; training uses seeds
1000 and up, calibration 500 and 501) and their truth into ``--data``, and
runs ``minescan evaluate --robustness``'s own code
(:func:`minescan.robustness.report.robustness`) on each ``--model``.  With
``--add-statistics`` a copy of each model gets input statistics measured on
the calibration scenes (seeds 500, 501) with its own recipe, as ``minescan
export --calibration`` records them, so a model exported without them
(the fixed-gain demo detector of stop 11) shows what the guard says.
The tables go to benchmarks/robustness.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from datetime import date
from pathlib import Path

from minescan.demo import shipped_model
from minescan.robustness.report import format_row, header, robustness
from minescan.scan.scanner import Scanner
from minescan.synthetic.mining import MiningSpec, write_mining_scene, write_truth

from machine import cpu_description  # benchmarks/machine.py, beside this script

HERE = Path(__file__).resolve().parent
DATA = HERE / ".data" / "robustness"
CALIBRATION_SEEDS = (500, 501)


def scenes(seeds: list[int], size: int, folder: Path) -> list[tuple[str, str]]:
    folder.mkdir(parents=True, exist_ok=True)
    pairs = []
    for seed in seeds:
        scene, truth = folder / f"scene_{seed}_{size}.tif", folder / f"truth_{seed}_{size}.geojson"
        if not (scene.exists() and truth.exists()):
            layout = write_mining_scene(scene, MiningSpec(width=size, height=size, seed=seed))
            write_truth(truth, layout, scene=scene.name)
        pairs.append((str(scene), str(truth)))
    return pairs


def with_statistics(model: Path, folder: Path) -> Path:
    """A copy of ``model`` carrying input statistics of the calibration scenes under its own recipe."""
    import onnx

    from minescan.export.calibration import input_statistics
    from minescan.export.onnx_metadata import read_metadata, write_metadata

    calibration = folder / "calibration"
    calibration.mkdir(parents=True, exist_ok=True)
    for seed in CALIBRATION_SEEDS:
        path = calibration / f"scene_{seed}.tif"
        if not path.exists():
            write_mining_scene(path, MiningSpec(width=2048, height=2048, seed=seed))
    proto = onnx.load(str(model))
    meta = read_metadata(proto)
    write_metadata(proto, dataclasses.replace(meta, input_statistics=input_statistics(calibration, meta.recipe)))
    out = folder / f"{model.stem}+statistics.onnx"
    onnx.save(proto, str(out))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", help="ONNX model(s) (default: the shipped demo detector)")
    p.add_argument("--add-statistics", action="store_true", help="give each model the calibration scenes' input statistics first")
    p.add_argument("--seeds", default="777,778,779")
    p.add_argument("--size", type=int, default=4096)
    p.add_argument("--perturbations", help="comma-separated subset (default: all)")
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--out", type=Path, default=HERE / "robustness.md")
    args = p.parse_args()
    from minescan.robustness.report import choose

    pairs = scenes([int(s) for s in args.seeds.split(",")], args.size, args.data)
    chosen = choose(args.perturbations.split(",") if args.perturbations else None)
    lines = [f"# Robustness, measured {date.today()} on {cpu_description()}", "",
             f"Fresh {args.size} px scenes (seeds {args.seeds}), detections pooled; P/R at score >= 0.5, IoU >= 0.5, "
             "AP over detections >= 0.05; input shift: the largest over the scenes; flagged: scenes over the guard's threshold.", ""]
    for model in [Path(m) for m in args.model or [str(shipped_model())]]:
        if args.add_statistics:
            model = with_statistics(model, args.data)
        scanner = Scanner(model)
        labels = [name for _, name in sorted(scanner.detector.metadata.labels.items())]
        lines += [f"## {model.name}", "", header(labels)]
        print(lines[-3], flush=True)
        print(lines[-1], flush=True)
        started = time.perf_counter()
        robustness(scanner, pairs, perturbations=chosen, options={"score_threshold": 0.05},
                   report=lambda row: (lines.append(format_row(row, labels, len(pairs))), print(lines[-1], flush=True)))
        lines += ["", f"({time.perf_counter() - started:.0f} s)", ""]
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
