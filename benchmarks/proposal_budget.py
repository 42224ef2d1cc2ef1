"""The proposal budget (``minescan export --max-proposals K``): CPU time per tile and recall of the full model, per K.

Run from the repository root (after the README's setup):

    .venv/bin/python benchmarks/proposal_budget.py                                  # the demo detector
    .venv/bin/python benchmarks/proposal_budget.py --model my_frcnn.onnx --ks 300,200,100,50
    .venv/bin/python benchmarks/proposal_budget.py --seeds 777 --size 1024 --rounds 3   # a smoke run
    .venv/bin/python benchmarks/proposal_budget.py --model /tmp/r50/r50.onnx --seeds 777 --size 1152 \
        --rounds 2 --timing-tiles 4 --append          # a costly model (~1.7 s/tile): few tiles, added below the demo rows

For each model (default: the shipped demo detector) and each K of ``--ks`` that
its first stage allows (1..its configured count; the others are listed as
refused), the model is rewritten with :func:`minescan.export.proposals.build_budget`
and measured in one run:

- ms/tile: ``--timing-tiles`` 640 px tiles through one ONNX Runtime CPU
  session per model (1 thread, as each of the scan's concurrent calls; batch 1); the K values alternate within
  each of ``--rounds`` rounds (tile by tile) and the table shows the median round's mean, with
  the ratio to the full model measured in the same run;
- recall: every 640 px tile (overlap 128, the scan's grid) of fresh synthetic
  mining scenes (``--seeds``, ``--size`` px; training uses 1000 and up),
  rendered with the model's recipe; the full model's detections at score >= 0.5
  matched by the budgeted model's (same class, box within 0.02),
  :func:`minescan.export.proposals.proposal_recall`.

Results go to benchmarks/proposal_budget.md; with ``--append`` the run is added to it as a section of its
own (header, table and notes), the earlier runs kept.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from datetime import date
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from minescan.demo import shipped_model
from minescan.export.calibration import calibration_tiles
from minescan.export.errors import ExportError
from minescan.export.onnx_metadata import read_metadata
from minescan.export.proposals import build_budget, find_proposals, proposal_recall
from minescan.synthetic.mining import MiningSpec, write_mining_scene

from machine import cpu_description  # benchmarks/machine.py, beside this script

HERE = Path(__file__).resolve().parent
DATA = HERE / ".data" / "proposal_budget"
TILE = 640


def scene_tiles(model: onnx.ModelProto, seeds: list[int], size: int) -> np.ndarray:
    """Every 640 px tile of each seed's mining scene, rendered with ``model``'s recipe."""
    tiles = []
    for seed in seeds:
        folder = DATA / f"seed_{seed}_{size}"
        scene = folder / "scene.tif"
        if not scene.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            write_mining_scene(scene, MiningSpec(width=size, height=size, seed=seed))
        tiles.append(calibration_tiles(folder, (TILE, TILE), read_metadata(model).recipe, count=10_000))
    return np.concatenate(tiles)


def time_models(sessions: dict[int, ort.InferenceSession], tiles: np.ndarray, rounds: int) -> dict[int, float]:
    """Median over ``rounds`` of each session's mean ms per tile; the sessions take turns tile by tile, so load
    from other processes on a shared machine falls on every K alike."""
    for session in sessions.values():  # warm-up, outside the clock
        session.run(None, {"input_tensor": tiles[:1]})
    times: dict[int, list[float]] = {k: [] for k in sessions}
    for _ in range(rounds):
        spent = dict.fromkeys(sessions, 0.0)
        for tile in tiles:
            for k, session in sessions.items():
                start = time.perf_counter()
                session.run(None, {"input_tensor": tile[np.newaxis]})
                spent[k] += time.perf_counter() - start
        for k in sessions:
            times[k].append(1000 * spent[k] / len(tiles))
    return {k: statistics.median(v) for k, v in times.items()}


def measure(path: Path, ks: list[int], seeds: list[int], size: int, rounds: int, timing_tiles: int) -> tuple[list[str], str]:
    model = onnx.load(str(path))
    found = find_proposals(model, where=str(path))
    allowed = sorted({k for k in ks if 1 <= k <= found.count} | {found.count}, reverse=True)
    refused = [k for k in ks if k not in allowed]
    budgets = {k: build_budget(model, None, k, where=str(path))[0].SerializeToString() for k in allowed}
    tiles = scene_tiles(model, seeds, size)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # as each of the scan's concurrent calls on the CPU; steadier on a shared machine
    sessions = {k: ort.InferenceSession(data, options, providers=["CPUExecutionProvider"]) for k, data in budgets.items()}
    step = max(1, len(tiles) // timing_tiles)
    ms = time_models(sessions, tiles[::step][:timing_tiles], rounds)
    rows = []
    for k in allowed:
        recall = proposal_recall(sessions[found.count], sessions[k], tiles, k, found.count)
        rows.append(f"| `{path.name}` | {k}{' (full)' if k == found.count else ''} | {ms[k]:.1f} | {ms[k] / ms[found.count]:.2f}x "
                    f"| {recall.recall:.3f} | {recall.kept} / {recall.compared} | {recall.extra} |")
        print(rows[-1], flush=True)
    note = (f"`{path.name}`: first stage configured for {found.count} proposals; {len(tiles)} tiles for recall, "
            f"{min(timing_tiles, len(tiles[::step]))} timed"
            + (f"; K = {', '.join(map(str, refused))} refused (above the configured count)" if refused else ""))
    return rows, note


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", type=Path, help="ONNX detector(s) (default: the shipped demo detector)")
    parser.add_argument("--ks", default="300,200,100,50", help="budgets to measure (default 300,200,100,50)")
    parser.add_argument("--extra-ks", default="25,10,5", help="smaller budgets added for models under 300 (default 25,10,5)")
    parser.add_argument("--seeds", default="777,778,779")
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--timing-tiles", type=int, default=16)
    parser.add_argument("--out", type=Path, default=HERE / "proposal_budget.md")
    parser.add_argument("--append", action="store_true", help="add this run to --out as a section of its own, keeping the earlier runs")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    seeds = [int(s) for s in args.seeds.split(",")]
    models = args.model or [shipped_model("fp32")]
    header = ["| model | K | ms/tile | vs full | recall of full model | kept / full detections | new detections |",
              "|---|---|---|---|---|---|---|"]
    rows, notes = [], []
    for path in models:
        ks = [int(k) for k in args.ks.split(",")]
        try:
            count = find_proposals(onnx.load(str(path), load_external_data=False), where=str(path)).count
        except ExportError as exc:
            print(f"skipped: {exc}")
            continue
        if count < max(ks):
            ks += [int(k) for k in args.extra_ks.split(",") if k]
        model_rows, note = measure(path, ks, seeds, args.size, args.rounds, args.timing_tiles)
        rows += model_rows
        notes.append(note)
    title = (f"## {', '.join(f'`{p.name}`' for p in models)}, {date.today()}" if args.append
             else "# Proposal budget: ms/tile and recall of the full model per K")
    text = "\n".join([
        title,
        "",
        f"Measured {date.today()} on {cpu_description()}, ONNX Runtime {ort.__version__} CPU (one 1-thread session per model, batch 1), "
        f"Python {platform.python_version()}, load average {load:.1f} at the start (a shared machine); "
        f"{TILE} px tiles; ms/tile is the median of {args.rounds} alternating rounds; "
        f"recall on every {TILE} px tile of fresh {args.size} x {args.size} mining scenes (seeds {args.seeds}): the full "
        "model's detections at score >= 0.5 that the budgeted model also makes (same class, box within 0.02).",
        "",
        *header, *rows, "",
        *[f"- {note}" for note in notes],
        "",
        "Made by `benchmarks/proposal_budget.py`.",
        "",
    ])
    if args.append and args.out.is_file():
        text = args.out.read_text().rstrip("\n") + "\n\n" + text
    args.out.write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
