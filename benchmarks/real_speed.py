"""A realistic full scene, scanned with each speed lever alone and all together: wall time, detector tiles, recall, RSS.

Run from the repository root (after the README's setup):

    .venv/bin/python benchmarks/real_speed.py                                   # full 10980 px scene, demo pair, both inputs
    .venv/bin/python benchmarks/real_speed.py --size 3072 --input tif           # a smoke run
    .venv/bin/python benchmarks/real_speed.py --detector r50.onnx [--int8 r50_int8.onnx] [--budget r50_k50.onnx]

The scene (:mod:`minescan.synthetic.sparse`, ``--size`` px, ``--seed``): a
Sentinel-2-like tile where mining lies in a few districts covering at most 5 %
of the scan's 640 px tiles (overlap 128), with look-alikes (bare fields,
quarries, towns) and rivers everywhere else; written once into ``--cache`` as
a DEFLATE GeoTIFF, its truth, and the same pixels as an L2A ``.SAFE`` with
1024 px-tiled lossless JPEG 2000 bands (``testkit.products.write_safe_from_raster``),
and reused by later runs.

Configurations, each in a fresh process (``Scanner`` API; wall time = load
models + scan + write the result; peak RSS = the process's ``ru_maxrss``),
``--runs`` times alternating, medians shown:

- plain: the FP32 detector;
- + INT8: its INT8 build (the demo's: the shipped ``demo_detector_int8.onnx``;
  else ``--int8`` or ``minescan export DET --precision int8`` into the cache);
- + budget: ``minescan export DET --max-proposals K`` (``--budget`` to give one);
- + gate: the FP32 detector behind the demo classifier (``--gate``) at minescan's
  default threshold (``--gate-threshold`` to change it);
- all together: the INT8 build re-exported with ``--max-proposals K``
  (``--budget-int8`` to give one), behind the same gate.

Every result file is scored against the truth (``minescan evaluate``'s
function; IoU 0.5, score >= 0.5; recall and precision over both classes).
Recall is only meaningful for a trained detector, so with ``--detector`` other
than the demo's, the demo pair (demo detector + demo classifier) runs the same
configurations too and its recall and precision are shown beside the given
detector's wall times, plus the demo pair's own table.

Writes ``--out`` (default ``benchmarks/real_speed.md``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from machine import cpu_description  # benchmarks/machine.py, beside this script

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MODELS = ROOT / "minescan" / "models"
DEMO_DETECTOR = MODELS / "demo_detector.onnx"
DEMO_INT8 = MODELS / "demo_detector_int8.onnx"
DEMO_CLASSIFIER = MODELS / "demo_classifier.onnx"

_CHILD = r"""
import json, resource, sys, time
start = time.perf_counter()
from minescan import Scanner
detector, gate, threshold, scene, out = sys.argv[1:6]
scanner = Scanner(detector, gate=gate if gate != "-" else None)
options = {"gate_threshold": float(threshold)} if threshold != "-" else {}
result = scanner.scan(scene, **options)
result.write(out)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "tiles": result.tiles, "skipped": result.skipped, "gated": result.gated,
                  "threshold": result.plan.gate.threshold if result.plan.gate else None,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


@dataclass(frozen=True)
class Config:
    name: str
    detector: Path
    gate: Path | None


def _minescan(*args: str) -> None:
    subprocess.run([str(Path(sys.executable).with_name("minescan")), *args], check=True, cwd=ROOT, capture_output=True, text=True)


def scene_files(cache: Path, size: int, seed: int, inputs: list[str]) -> dict:
    """The cached scene (written if absent): {"tif": path, "safe": path, "truth": path, "facts": {...}}."""
    sys.path.insert(0, str(ROOT))
    from minescan.synthetic.sparse import SparseSpec, write_sparse_scene
    from testkit.products import ProductSpec, write_safe_from_raster

    folder = cache / f"sparse_{size}_seed{seed}"
    spec = SparseSpec(size=size, seed=seed)
    facts_path = folder / "facts.json"
    if not facts_path.is_file():
        start = time.perf_counter()
        scene = write_sparse_scene(folder, spec)
        tif_seconds = time.perf_counter() - start
        layout = scene.layout
        truth = layout.truth()
        facts = {"size": size, "seed": seed, "tiles": spec.tiles, "mining_tiles": scene.mining_tiles,
                 "illegal": int((truth.classes == 1).sum()), "legal": int((truth.classes == 2).sum()),
                 "lookalikes": len(layout.distractors()), "tif_seconds": round(tif_seconds, 1)}
        facts_path.write_text(json.dumps(facts))
    facts = json.loads(facts_path.read_text())
    safes = sorted(folder.glob("*.SAFE"))
    if "safe" in inputs and not safes:
        start = time.perf_counter()
        safes = [write_safe_from_raster(folder, folder / "scene.tif", ProductSpec(tile="T30PXT", sensing="20240115T103321"))]
        facts["safe_seconds"] = round(time.perf_counter() - start, 1)
        facts_path.write_text(json.dumps(facts))
    return {"tif": folder / "scene.tif", "safe": safes[0] if safes else None, "truth": folder / "truth.geojson", "facts": facts}


def models(cache: Path, detector: Path, int8: Path | None, budget: Path | None, budget_int8: Path | None, k: int) -> dict[str, Path]:
    """The detector's four builds: fp32, int8, budget (fp32, K), budget_int8; derived into ``cache/models`` when not given."""
    folder = cache / "models"
    folder.mkdir(parents=True, exist_ok=True)
    stem = detector.stem
    if int8 is None:
        int8 = DEMO_INT8 if detector.resolve() == DEMO_DETECTOR.resolve() else folder / f"{stem}_int8.onnx"
        if not int8.is_file():
            print(f"exporting {int8.name} (INT8, synthetic calibration)", flush=True)
            _minescan("export", str(detector), "--out", str(int8), "--precision", "int8")
    if budget is None:
        budget = folder / f"{stem}_k{k}.onnx"
        if not budget.is_file():
            _minescan("export", str(detector), "--out", str(budget), "--max-proposals", str(k))
    if budget_int8 is None:
        budget_int8 = folder / f"{int8.stem}_k{k}.onnx"
        if not budget_int8.is_file():
            _minescan("export", str(int8), "--out", str(budget_int8), "--max-proposals", str(k))
    return {"fp32": detector, "int8": int8, "budget": budget, "budget_int8": budget_int8}


def configs(builds: dict[str, Path], gate: Path, k: int) -> list[Config]:
    return [
        Config("plain FP32", builds["fp32"], None),
        Config("+ INT8", builds["int8"], None),
        Config(f"+ proposal budget K={k}", builds["budget"], None),
        Config("+ gate", builds["fp32"], gate),
        Config(f"all together (INT8, K={k}, gate)", builds["budget_int8"], gate),
    ]


def run_child(config: Config, threshold: float | None, scene: Path, out: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(config.detector), str(config.gate or "-"),
         "-" if threshold is None or config.gate is None else str(threshold), str(scene), str(out)],
        capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        raise SystemExit(f"{config.name} on {scene.name} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def score(result: Path, truth: Path) -> tuple[float, float, int, int]:
    """Recall and precision over all classes (IoU 0.5, score >= 0.5, as ``minescan evaluate``), TP and truth count."""
    sys.path.insert(0, str(ROOT))
    from minescan.results.evaluation import evaluate
    from minescan.results.read import common_crs, read_result_file

    found = read_result_file(result, scores=True)
    known = read_result_file(truth, scores=False)
    crs = common_crs(found, known)
    e = evaluate(found.boxes(crs), found.scores, found.class_ids, known.boxes(crs), known.class_ids)
    tp = sum(c.true_positives for c in e.classes)
    truth_count = sum(c.truth for c in e.classes)
    detections = sum(c.detections for c in e.classes)
    return tp / truth_count if truth_count else 1.0, tp / detections if detections else 1.0, tp, truth_count


def measure(sets: dict[str, list[Config]], scenes: dict[str, Path], truth: Path, threshold: float | None, runs: int,
            work: Path) -> dict[tuple[str, str, str], dict]:
    """{(set, config name, input): medians and scores}, configurations alternating within each round."""
    raw: dict[tuple[str, str, str], list[dict]] = {}
    for round_ in range(runs):
        for set_name, config_list in sets.items():
            for kind, scene in scenes.items():
                for i, config in enumerate(config_list):
                    out = work / f"{set_name}_{i}_{kind}.gpkg"
                    if out.exists():
                        out.unlink()
                    child = run_child(config, threshold, scene, out)
                    child["recall"], child["precision"], child["tp"], child["truth"] = score(out, truth)
                    raw.setdefault((set_name, config.name, kind), []).append(child)
                    print(f"round {round_ + 1}/{runs} {set_name} | {config.name} | {kind}: {child['seconds']:.1f} s, "
                          f"detector tiles {child['tiles'] - child['skipped'] - child['gated']}/{child['tiles']}, "
                          f"recall {child['recall']:.3f}, precision {child['precision']:.3f}, RSS {child['rss_mb']:.0f} MB",
                          flush=True)
    merged = {}
    for key, results in raw.items():
        first = results[0]
        merged[key] = {
            "seconds": statistics.median(r["seconds"] for r in results),
            "rss_mb": statistics.median(r["rss_mb"] for r in results),
            "tiles": first["tiles"], "run": first["tiles"] - first["skipped"] - first["gated"],
            "threshold": first["threshold"],
            "recall": first["recall"], "precision": first["precision"], "tp": first["tp"], "truth": first["truth"],
        }
    return merged


def table(set_name: str, config_list: list[Config], kinds: list[str], merged: dict, recall_set: str) -> list[str]:
    """One Markdown table: wall time etc. from ``set_name``, recall/precision from ``recall_set`` (same configuration)."""
    own = set_name == recall_set
    head = "recall | precision" if own else "recall (demo pair) | precision (demo pair)"
    lines = [f"| configuration | input | detector model | gate | wall s | speed-up vs plain | tiles run by the detector | "
             f"peak RSS MB | {head} |", "|---|---|---|---|---|---|---|---|---|---|"]
    for kind in kinds:
        plain = merged[(set_name, config_list[0].name, kind)]["seconds"]
        for config in config_list:
            m = merged[(set_name, config.name, kind)]
            r = merged[(recall_set, config.name, kind)]
            gate = "-" if config.gate is None else f"`{config.gate.name}` at {m['threshold']:g}"
            lines.append(f"| {config.name} | {kind} | `{config.detector.name}` | {gate} | {m['seconds']:.1f} | "
                         f"{plain / m['seconds']:.2f}x | {m['run']} / {m['tiles']} | {m['rss_mb']:.0f} | "
                         f"{r['recall']:.3f} ({r['tp']}/{r['truth']}) | {r['precision']:.3f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detector", type=Path, default=DEMO_DETECTOR, help="FP32 ONNX detector (default: the demo detector)")
    parser.add_argument("--int8", type=Path, help="its INT8 build (default: the demo's shipped one, else exported into the cache)")
    parser.add_argument("--budget", type=Path, help="its --max-proposals build (default: exported into the cache)")
    parser.add_argument("--budget-int8", type=Path, help="its INT8 build with the budget (default: exported from the INT8 build)")
    parser.add_argument("--max-proposals", type=int, default=50, help="K for the budget builds (default 50)")
    parser.add_argument("--gate", type=Path, default=DEMO_CLASSIFIER, help="tile classifier (default: the demo classifier)")
    parser.add_argument("--gate-threshold", type=float, help="default: minescan's (minescan/defaults.py)")
    parser.add_argument("--input", choices=("safe", "tif", "both"), default="both")
    parser.add_argument("--size", type=int, default=10980)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", type=int, default=1, help="fresh processes per configuration (medians; default 1)")
    parser.add_argument("--cache", type=Path, default=HERE / ".data" / "real_speed", help="scene and derived models")
    parser.add_argument("--out", type=Path, default=HERE / "real_speed.md")
    args = parser.parse_args()

    kinds = ["tif", "safe"] if args.input == "both" else [args.input]
    scene = scene_files(args.cache, args.size, args.seed, kinds)
    facts = scene["facts"]
    print(f"scene: {json.dumps(facts)}", flush=True)
    k = args.max_proposals
    sets = {"demo pair": configs(models(args.cache, DEMO_DETECTOR, None, None, None, k), DEMO_CLASSIFIER, k)}
    own_demo = args.detector.resolve() == DEMO_DETECTOR.resolve() and args.gate.resolve() == DEMO_CLASSIFIER.resolve()
    if not own_demo:
        builds = models(args.cache, args.detector, args.int8, args.budget, args.budget_int8, k)
        sets = {args.detector.name: configs(builds, args.gate, k), **sets}
    work = args.cache / "results"
    work.mkdir(parents=True, exist_ok=True)
    merged = measure(sets, {kind: scene[kind] for kind in kinds}, scene["truth"], args.gate_threshold, args.runs, work)

    share = facts["mining_tiles"] / facts["tiles"]
    made = f"GeoTIFF in {facts['tif_seconds']} s" + (f", .SAFE in {facts['safe_seconds']} s" if "safe_seconds" in facts else "")
    lines = [
        f"Measured {date.today()} on {cpu_description()}, Python {sys.version.split()[0]}; "
        f"median of {args.runs} fresh process(es) per row, configurations alternating.", "",
        f"Scene: `minescan.synthetic.sparse`, {args.size} x {args.size} px (seed {args.seed}), {facts['tiles']} tiles of 640 px "
        f"(overlap 128), mining in {facts['mining_tiles']} of them ({share:.1%}): {facts['illegal']} illegal and "
        f"{facts['legal']} legal sites; {facts['lookalikes']} look-alikes (bare fields, quarries, towns) elsewhere. "
        f"Inputs: `tif` = 4-band DEFLATE GeoTIFF, `safe` = L2A .SAFE with 1024 px-tiled lossless JPEG 2000 bands "
        f"(generated: {made}). Recall/precision: IoU 0.5, score >= 0.5, both classes.", "",
    ]
    for set_name, config_list in sets.items():
        lines += [f"**{set_name}**" + ("" if set_name == "demo pair" else
                  " (wall time of this detector; recall and precision of the demo pair under the same configuration)"), ""]
        lines += table(set_name, config_list, kinds, merged, "demo pair") + [""]
    first = next(iter(sets))
    for kind in kinds:
        plain, together = (merged[(first, sets[first][i].name, kind)] for i in (0, -1))
        rp, rt = (merged[("demo pair", sets["demo pair"][i].name, kind)]["recall"] for i in (0, -1))
        lines.append(f"- {kind}, `{args.detector.name}`: all together against plain FP32: speed-up "
                     f"{plain['seconds'] / together['seconds']:.2f}x (target >= 5x); demo pair recall {rt:.3f} against {rp:.3f} plain "
                     f"(loss {max(0.0, rp - rt):.3f}, target <= 0.010).")
    command = " ".join(["`.venv/bin/python benchmarks/real_speed.py", *sys.argv[1:]]) + "`"
    text = "\n".join(lines) + f"\n\nCommand: {command}\n"
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
