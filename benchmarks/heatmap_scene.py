"""A full Sentinel-2 scene into a heatmap: wall time and peak RSS, beside a detection scan of the same scene.

Generates (or reuses, ``--scene``) a 10980 x 10980 px synthetic mining scene,
then scans it in fresh processes, alternating, ``--runs`` times each:

* the shipped demo classifier at ``--stride`` (default 64) into a heatmap COG;
* the same classifier at half its window (the scan's default stride);
* the shipped demo detector into a GeoPackage (the memory baseline: "RSS
  bounded as for detection scans").

Each process reports its wall time, windows and ``ru_maxrss``; the table gives
medians and the heatmap's peak RSS over the detection scan's (a ratio in the
same run, so the machine's noise cancels).  Writes ``benchmarks/heatmap_scene.md``.

    .venv/bin/python benchmarks/heatmap_scene.py [--scene S.tif] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

from machine import cpu_description  # benchmarks/machine.py, beside this script

HERE = Path(__file__).parent
ROOT = HERE.parent

_CHILD = r"""
import json, resource, sys, time
from minescan import Scanner
model, scene, out, stride = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
scanner = Scanner(model)
start = time.perf_counter()
options = {"stride": int(stride)} if stride != "-" else {}
result = scanner.scan(scene, **options)
result.write(out)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "windows": result.tiles, "skipped": result.skipped,
                  "stride": getattr(result, "stride", None),
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _scan(model: Path, scene: Path, out: Path, stride: int | None) -> dict:
    done = subprocess.run([sys.executable, "-c", _CHILD, str(model), str(scene), str(out), str(stride or "-")],
                          check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scene", help="a scene to scan (default: generate a 10980 px one, seed 4242)")
    parser.add_argument("--stride", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", default=str(HERE / "heatmap_scene.md"))
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from minescan.demo import shipped_model
    from minescan.synthetic.mining import MiningSpec, write_mining_scene

    work = Path(tempfile.mkdtemp(prefix="minescan-heatmap-bench-"))
    scene = Path(args.scene) if args.scene else work / "scene.tif"
    if not args.scene:
        write_mining_scene(scene, MiningSpec(width=10980, height=10980, seed=4242))
    classifier, detector = shipped_model(classifier=True), shipped_model()
    settings = {
        f"heatmap, stride {args.stride}": (classifier, work / "heat.tif", args.stride),
        "heatmap, default stride (half the window)": (classifier, work / "heat_default.tif", None),
        "detection scan (demo detector)": (detector, work / "detections.gpkg", None),
    }
    runs: dict[str, list[dict]] = {name: [] for name in settings}
    for _ in range(args.runs):
        for name, (model, out, stride) in settings.items():
            runs[name].append(_scan(model, scene, out, stride))
    baseline_rss = statistics.median(r["rss_mb"] for r in runs["detection scan (demo detector)"])
    import rasterio

    with rasterio.open(scene) as src:
        size = f"{src.width} x {src.height}"
    lines = [f"Measured {date.today()} on {cpu_description()}, Python {sys.version.split()[0]}; scene {size} px "
             f"(uint16, 4 bands, DEFLATE GeoTIFF), median of {args.runs} fresh processes each, alternating.", "",
             "| scan | windows or tiles | cells | wall s | windows/s | peak RSS MB | RSS vs detection scan |",
             "|---|---|---|---|---|---|---|"]
    for name, results in runs.items():
        seconds = statistics.median(r["seconds"] for r in results)
        rss = statistics.median(r["rss_mb"] for r in results)
        windows = results[0]["windows"]
        stride = results[0]["stride"]
        cells = "-" if stride is None else f"{-(-int(size.split(' x ')[0]) // stride)}^2 of {stride} px"
        lines.append(f"| {name} | {windows} | {cells} | {seconds:.1f} | {windows / seconds:.0f} | {rss:.0f} | "
                     f"{rss / baseline_rss:.2f}x |")
    text = "\n".join(lines) + "\n\nCommand: `.venv/bin/python benchmarks/heatmap_scene.py`\n"
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
