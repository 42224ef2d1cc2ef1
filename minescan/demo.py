"""``minescan demo``: the whole product on a scene nobody has seen before.

It generates a Sentinel-2-like L2A scene with illegal and legal mining sites
and look-alike distractors (:mod:`minescan.synthetic.mining`; a new seed each
run unless given), scans it with the demo detector the package ships (a
Faster R-CNN trained on such scenes by ``training/train_demo_detector.py`` and
exported through ``minescan export``), writes GeoJSON, GeoPackage, the truth
and a quicklook PNG, and prints precision, recall and AP per class against the
truth, and the throughput.  It needs no TensorFlow.
"""

from __future__ import annotations

import argparse
import secrets
from importlib import resources
from pathlib import Path

from minescan.engine import load_detector
from minescan.errors import MinescanError
from minescan.results.evaluation import evaluate
from minescan.results.quicklook import write_quicklook
from minescan.scan.stream import ScanOptions, scan_scene
from minescan.synthetic.mining import MiningSpec, write_mining_scene, write_truth
from minescan.results.writers import write_detections

MODELS = {"fp32": "demo_detector.onnx", "int8": "demo_detector_int8.onnx"}


class DemoError(MinescanError):
    """Demo settings that cannot be used."""


def shipped_model(precision: str = "fp32") -> Path:
    """The demo detector shipped inside the package."""
    path = Path(str(resources.files("minescan") / "models" / MODELS[precision]))
    if not path.is_file():
        raise DemoError(f"the packaged demo detector {path} is missing; reinstall minescan")
    return path


def _size(value: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise DemoError(f"--size must look like 4096x4096, got {value!r}") from None
    if width < 128 or height < 128:
        raise DemoError(f"--size {value} is too small (at least 128x128)")
    return width, height


def run_demo(args: argparse.Namespace) -> int:
    """Generate, scan, write and score; print where everything is."""
    width, height = _size(args.size)
    seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scene_path = out / "scene.tif"
    print(f"generating a {width} x {height} px Sentinel-2-like L2A scene (seed {seed}) -> {scene_path}")
    layout = write_mining_scene(scene_path, MiningSpec(width=width, height=height, seed=seed))
    truth = layout.truth()
    print(f"placed {int((truth.classes == 1).sum())} illegal and {int((truth.classes == 2).sum())} legal mining sites "
          f"and {len(layout.distractors())} look-alikes")
    model = shipped_model(args.precision)
    detector = load_detector(model)
    result = scan_scene(scene_path, detector, ScanOptions())
    labels = dict(detector.metadata.labels)
    written = [
        write_detections(out / name, result.detections, transform=result.transform, crs=result.crs, labels=labels, scene=result.scene)
        for name in ("detections.geojson", "detections.gpkg")
    ]
    written.append(write_truth(out / "truth.geojson", layout, scene=result.scene))
    bands = tuple(detector.metadata.recipe.bands or (3, 2, 1))
    written.append(write_quicklook(out / "quicklook.png", scene_path, result.detections, bands=bands, nodata=None, max_size=1024))
    d = result.detections
    scores = evaluate(d.boxes, d.scores, d.classes, truth.boxes, truth.classes, labels=labels)
    km2 = width * height * 1e-4  # 10 m pixels
    print(
        f"scanned {result.tiles} tiles with {model.name} ({detector.backend}) in {result.seconds:.1f} s: "
        f"{result.tiles_per_second:.1f} tiles/s, {km2 / result.seconds:.0f} km2/s"
    )
    print(scores.format())
    for path in written:
        print(f"wrote {path}")
    return 0
