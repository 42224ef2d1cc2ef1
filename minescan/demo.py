"""``minescan demo``: the whole product on a scene nobody has seen before.

It generates a Sentinel-2-like scene (a new seed each run unless given) with
objects at known places, builds the project's known-answer detector, scans
the scene exactly as ``minescan scan`` does, writes GeoJSON and GeoPackage
results beside the truth, and prints how the results compare with it.
"""

from __future__ import annotations

import argparse
import secrets
from pathlib import Path

import numpy as np

from minescan.engine import load_detector
from minescan.errors import MinescanError
from minescan.evaluation import compare
from minescan.scan import ScanOptions, scan_scene
from minescan.synthetic.scene import SceneSpec, write_scene
from minescan.synthetic.square_detector import save_square_detector
from minescan.tiling.output import write_detections
from minescan.tiling.stitch import SceneDetections


class DemoError(MinescanError):
    """Demo settings that cannot be used."""


def _size(value: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise DemoError(f"--size must look like 5000x4000, got {value!r}") from None
    if width < 64 or height < 64:
        raise DemoError(f"--size {value} is too small (at least 64x64)")
    return width, height


def run_demo(args: argparse.Namespace) -> int:
    """Generate, scan, write and score; print where everything is."""
    width, height = _size(args.size)
    seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    options = ScanOptions(bands=(3, 2, 1))
    spec = SceneSpec(
        width=width, height=height, objects=args.objects, seed=seed,
        tile=640, overlap=options.overlap, nodata_width=min(width, height) // 6,
    )
    scene_path = out / "scene.tif"
    print(f"generating a {width} x {height} px 4-band uint16 scene (seed {seed}) -> {scene_path}")
    truth = write_scene(scene_path, spec)
    print(f"placed {len(truth.boxes)} objects, some across tile borders and along the nodata edge")
    detector = load_detector(save_square_detector(out / "square_detector.onnx"))
    result = scan_scene(scene_path, detector, options)
    labels = dict(detector.metadata.labels)
    written = [
        write_detections(out / name, result.detections, transform=result.transform, crs=result.crs, labels=labels, scene=result.scene)
        for name in ("detections.geojson", "detections.gpkg")
    ]
    truth_detections = SceneDetections(truth.boxes, np.ones(len(truth.classes), np.float32), truth.classes)
    written.append(
        write_detections(out / "truth.geojson", truth_detections, transform=result.transform, crs=result.crs, labels=labels, scene=result.scene)
    )
    d = result.detections
    agreement = compare(d.boxes, d.scores, d.classes, truth.boxes, truth.classes)
    km2 = width * height * 1e-4  # 10 m pixels
    print(
        f"scanned {result.tiles} tiles ({result.skipped} nodata) in {result.seconds:.1f} s: "
        f"{result.tiles_per_second:.1f} tiles/s, {km2 / result.seconds:.0f} km2/s"
    )
    print(f"against the truth: {agreement.format()}")
    for path in written:
        print(f"wrote {path}")
    return 0
