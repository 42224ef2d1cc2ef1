"""The same scenes scanned by a local run and by Ray with 1 and 2 workers: scenes/s, Ray's overhead, scaling.

Run from the repository root (after the README's setup, which installs the ``ray`` extra with the tests):

    .venv/bin/python benchmarks/ray_scaling.py --detector r50.onnx       # the table in benchmarks/ray_scaling.md
    .venv/bin/python benchmarks/ray_scaling.py --scenes 2 --size 1152     # a smoke run with the demo detector

``--scenes`` generated demo scenes (:mod:`minescan.synthetic.mining`, ``--size``
px square, seeds 100...) are written once into ``--cache``.  Each
configuration is one fresh ``minescan scan SCENES --out-dir R`` process,
timed from start to exit (model load, every scene scanned and written):

- local, 1 worker: ``--workers 1 --threads 1`` (one inference call at a time on one core);
- local, 2 workers: ``--workers 2 --threads 1``;
- Ray, 1 worker: ``--ray --ray-workers 1 --cpus-per-worker 1`` (a local Ray instance started by the run);
- Ray, 2 workers: ``--ray --ray-workers 2 --cpus-per-worker 1``.

Ray's overhead is the Ray run's wall time over the local run's with the same
worker count; it includes starting the local Ray instance, which a cluster
that is already up does not pay, so that start-up (``ray.init`` to shutdown
with nothing run) is measured on its own and shown too, and the overhead
is also given without it.  Scaling efficiency: scenes/s with 2 workers over
twice the scenes/s with 1.  On these 2 cores a model must cost far more than
reading its tiles for two workers to help: the default ``--detector`` is the
demo detector for smoke runs; the table in ``ray_scaling.md`` is the
ResNet-50 fixture (``testkit.fixture_model``, exported by ``minescan export``).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

from machine import cpu_description  # benchmarks/machine.py, beside this script

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEMO_DETECTOR = ROOT / "minescan" / "models" / "demo_detector.onnx"

CONFIGS = [
    ("local, 1 worker", 1, ["--workers", "1", "--threads", "1"]),
    ("local, 2 workers", 2, ["--workers", "2", "--threads", "1"]),
    ("Ray, 1 worker", 1, ["--ray", "--ray-workers", "1", "--cpus-per-worker", "1"]),
    ("Ray, 2 workers", 2, ["--ray", "--ray-workers", "2", "--cpus-per-worker", "1"]),
]


def scenes(cache: Path, count: int, size: int) -> list[Path]:
    from minescan.synthetic.mining import MiningSpec, write_mining_scene

    cache.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = cache / f"scene{size}_{index}.tif"
        if not path.is_file():
            write_mining_scene(path, MiningSpec(width=size, height=size, seed=100 + index))
        paths.append(path)
    return paths


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT, capture_output=True, text=True)
    return time.perf_counter() - start


def ray_startup() -> float:
    """A local Ray instance started and shut down with nothing run, in a fresh process."""
    code = "import ray; ray.init(include_dashboard=False, logging_level='ERROR'); ray.shutdown()"
    return timed([sys.executable, "-c", code])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--detector", type=Path, default=DEMO_DETECTOR)
    parser.add_argument("--scenes", type=int, default=8)
    parser.add_argument("--size", type=int, default=1152, help="scene side in px (1152: 2 x 2 tiles of 640/128 px)")
    parser.add_argument("--runs", type=int, default=1, help="rounds of all configurations, alternating; medians shown")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/minescan-ray-scaling"))
    parser.add_argument("--out", type=Path, default=HERE / "ray_scaling.md")
    args = parser.parse_args(argv)

    paths = scenes(args.cache, args.scenes, args.size)
    minescan = str(Path(sys.executable).with_name("minescan"))
    walls: dict[str, list[float]] = {name: [] for name, _, _ in CONFIGS}
    startup: list[float] = []
    for round_ in range(args.runs):
        for name, _, extra in CONFIGS:
            out = args.cache / f"run-{round_}-{name.replace(', ', '-').replace(' ', '')}"
            subprocess.run(["rm", "-rf", str(out)], check=True)
            walls[name].append(timed([minescan, "scan", *map(str, paths), "--model", str(args.detector),
                                      "--out-dir", str(out), "--quicklook-size", "0", *extra]))
            print(f"{name}: {walls[name][-1]:.1f} s", flush=True)
        startup.append(ray_startup())
    up = statistics.median(startup)
    wall = {name: statistics.median(values) for name, values in walls.items()}
    rate = {name: args.scenes / seconds for name, seconds in wall.items()}
    rows = []
    for name, workers, _ in CONFIGS:
        local = wall[f"local, {workers} worker{'s' if workers > 1 else ''}"]
        single = rate[name.replace("2 workers", "1 worker")]
        overhead = f"{wall[name] / local:.2f}x ({(wall[name] - up) / local:.2f}x without start-up)" if name.startswith("Ray") else "1.00x"
        efficiency = f"{rate[name] / (2 * single):.2f}" if workers == 2 else "-"
        rows.append(f"| {name} | {wall[name]:.1f} | {rate[name]:.3f} | {overhead} | {efficiency} |")
    from minescan.raster.grid import TileGrid

    tiles = len(TileGrid(args.size, args.size, 640, 128))
    text = "\n".join([
        "# Ray scaling",
        "",
        f"Measured {date.today().isoformat()} on {cpu_description()}, by `benchmarks/ray_scaling.py"
        f"{'' if args.detector == DEMO_DETECTOR else ' --detector ' + args.detector.name}"
        f"{f' --scenes {args.scenes}' if args.scenes != 8 else ''}{f' --size {args.size}' if args.size != 1152 else ''}"
        f"{f' --runs {args.runs}' if args.runs != 1 else ''}`: "
        f"{args.scenes} generated demo scenes of {args.size} x {args.size} px ({tiles} tiles of 640/128 px each), "
        f"detector `{args.detector.name}`, {args.runs} round(s), medians.  Wall time: one `minescan scan ... --out-dir` "
        "process from start to exit (model load, scans, results written).",
        "",
        "| configuration | wall s | scenes/s | vs local, same workers | scaling efficiency |",
        "|---|---|---|---|---|",
        *rows,
        "",
        f"Starting and stopping a local Ray instance alone: {up:.1f} s (a cluster already up does not pay it).",
        "",
    ])
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
