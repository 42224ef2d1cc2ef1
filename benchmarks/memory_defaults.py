"""Peak RSS and wall time of a costly model's scan: the model-aware default against each workers x threads setting.

Run from the repository root (after the README's setup), with the ResNet-50 fixture exported to ONNX
(the commands are in the README's *Memory budget* section):

    .venv/bin/python benchmarks/memory_defaults.py --model /tmp/r50/r50.onnx
    .venv/bin/python benchmarks/memory_defaults.py --model minescan/models/demo_detector.onnx --rounds 1   # a smoke run

Each setting runs in a fresh process (peak RSS is the process's VmHWM: model load, probe call and scan),
scanning a generated 1664 x 1664 px mining scene (3 x 3 tiles of 640 px, overlap 128) with ``Scanner``;
the settings take turns within each of ``--rounds`` rounds, so load from other processes on a shared
machine falls on every setting alike, and the table shows medians with the load average around each run.
Settings: the new default (calls x threads chosen from the model's probe call within the default budget,
the new session memory settings), and 2 x 1 and 1 x 2 with the session memory settings before this change
("old": ONNX Runtime's defaults) and now ("new": ``SESSION_MEMORY_SETTINGS`` of
:mod:`minescan.engine.onnxruntime_backend` for costly models).

Results go to benchmarks/memory_defaults.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / ".data" / "memory_defaults"
SIZE = 1664  # px: 3 x 3 tiles of 640 px at overlap 128

# label: (workers, threads, session settings)
SETTINGS = {
    "new default": (None, None, "new"),
    "2 x 1, old session": (2, 1, "old"),
    "1 x 2, old session": (1, 2, "old"),
    "2 x 1, new session": (2, 1, "new"),
    "1 x 2, new session": (1, 2, "new"),
}


def child(model: str, scene: str, workers: int | None, threads: int | None, session: str) -> None:
    """One scan in this fresh process; prints one JSON line."""
    from minescan.engine import onnxruntime_backend
    from minescan.scan.scanner import Scanner

    if session == "old":  # ONNX Runtime's own memory settings, as before the memory budget
        onnxruntime_backend.SESSION_MEMORY_SETTINGS = {}
    start = time.perf_counter()
    scanner = Scanner(model, backend="cpu", threads=threads, workers=workers)
    loaded = time.perf_counter() - start
    start = time.perf_counter()
    result = scanner.scan(scene)
    seconds = time.perf_counter() - start
    peak = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    used = os.times()
    print(json.dumps({"workers": scanner.detector.concurrency, "threads": scanner.detector.threads, "load_s": loaded,
                      "scan_s": seconds, "peak_rss": peak, "detections": len(result.detections), "tiles": result.tiles,
                      "why": result.plan.model.split_reason, "cpu_s": used.user + used.system}))


def run_setting(model: Path, scene: Path, workers: int | None, threads: int | None, session: str) -> dict:
    command = [sys.executable, __file__, "--child", "--model", str(model), "--scene", str(scene), "--session", session]
    command += (["--workers", str(workers)] if workers else []) + (["--threads", str(threads)] if threads else [])
    before = os.getloadavg()[0]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    figures = json.loads(out.strip().splitlines()[-1])
    figures["load"] = (before + os.getloadavg()[0]) / 2
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("/tmp/r50/r50.onnx"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "memory_defaults.md")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--scene", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--session", default="new", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(str(args.model), args.scene, args.workers, args.threads, args.session)
        return
    sys.path.insert(0, str(HERE))
    import onnxruntime as ort

    from machine import cpu_description  # benchmarks/machine.py, beside this script
    from minescan.synthetic.mining import MiningSpec, write_mining_scene

    scene = DATA / f"scene_{SIZE}.tif"
    if not scene.is_file():
        DATA.mkdir(parents=True, exist_ok=True)
        write_mining_scene(scene, MiningSpec(width=SIZE, height=SIZE, seed=7, illegal_density=4.0))
    runs: dict[str, list[dict]] = {label: [] for label in SETTINGS}
    for round_ in range(args.rounds):
        for label, (workers, threads, session) in SETTINGS.items():
            figures = run_setting(args.model, scene, workers, threads, session)
            runs[label].append(figures)
            print(f"round {round_ + 1} {label}: {figures['workers']} x {figures['threads']}, {figures['scan_s']:.1f} s, "
                  f"peak {figures['peak_rss'] / 2**20:.0f} MiB, load {figures['load']:.1f}", flush=True)
    fastest = min(statistics.median(r["scan_s"] for r in runs[label]) for label in SETTINGS if label != "new default")
    rows = []
    for label, figures in runs.items():
        scan_s = statistics.median(r["scan_s"] for r in figures)
        rows.append(f"| {label} | {figures[0]['workers']} x {figures[0]['threads']} | {scan_s:.1f} | {scan_s / fastest:.2f}x | "
                    f"{statistics.median(r['peak_rss'] for r in figures) / 2**20:.0f} | "
                    f"{min(r['peak_rss'] for r in figures) / 2**20:.0f}-{max(r['peak_rss'] for r in figures) / 2**20:.0f} | "
                    f"{statistics.median(r['cpu_s'] for r in figures):.1f} | "
                    f"{statistics.median(r['load_s'] for r in figures):.1f} | "
                    f"{min(r['load'] for r in figures):.1f}-{max(r['load'] for r in figures):.1f} | {figures[0]['detections']} |")
    why = runs["new default"][0]["why"]
    text = "\n".join([
        "# Memory defaults: peak RSS and wall time per calls x threads",
        "",
        f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {cpu_description()}, ONNX Runtime {ort.__version__}, "
        f"Python {platform.python_version()}; model `{args.model.name}` ({args.model.stat().st_size / 1e6:.0f} MB); "
        f"a {SIZE} x {SIZE} px generated mining scene, {runs['new default'][0]['tiles']} tiles of 640 px, default batch; "
        f"each setting in a fresh process, {args.rounds} alternating round(s), medians; peak RSS is the whole "
        "process's (model load, probe call, scan); CPU s is the process's user + system time (load, probe and scan), "
        "the figure other processes on a shared machine disturb least; the load average around each run is listed.",
        "",
        "| setting | calls x threads | scan s | vs fastest fixed setting | peak RSS MiB (median) | peak RSS MiB (range) "
        "| CPU s (process) | load s | load average | detections |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"The new default's choice, as the plan states it: {why}.",
        "",
        "Made by `benchmarks/memory_defaults.py`.",
        "",
    ])
    args.out.write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
