"""``minescan demo``: the whole product on a scene nobody has seen before.

It generates a Sentinel-2-like L2A scene with illegal and legal mining sites
and look-alike distractors (:mod:`minescan.synthetic.mining`; a new seed each
run unless given), scans it with the demo detector the package ships (a
Faster R-CNN trained on such scenes by ``training/train_demo_detector.py`` and
exported through ``minescan export``), writes GeoJSON, GeoPackage, the truth
and a quicklook PNG, and prints precision, recall and AP per class against the
truth, and the throughput.  It needs no TensorFlow.

With ``classifier=True`` (``minescan demo --classifier``) the shipped tile
classifier (``training/train_demo_classifier.py``) scans the same kind of scene
into a probability heatmap COG, its regions and a heatmap quicklook, scored per
cell against the truth (:mod:`minescan.results.heatmap_evaluation`).
"""

from __future__ import annotations

import secrets
from importlib import resources
from pathlib import Path

from minescan.errors import MinescanError
from minescan.results.evaluation import evaluate
from minescan.scan.scanner import Scanner
from minescan.synthetic.mining import MiningSpec, write_mining_scene, write_truth

MODELS = {"fp32": "demo_detector.onnx", "int8": "demo_detector_int8.onnx"}
CLASSIFIERS = {"fp32": "demo_classifier.onnx", "int8": "demo_classifier_int8.onnx"}


class DemoError(MinescanError):
    """Demo settings that cannot be used."""


def shipped_model(precision: str = "fp32", *, classifier: bool = False) -> Path:
    """The demo detector (or tile classifier) shipped inside the package."""
    path = Path(str(resources.files("minescan") / "models" / (CLASSIFIERS if classifier else MODELS)[precision]))
    if not path.is_file():
        raise DemoError(f"the packaged demo {'classifier' if classifier else 'detector'} {path} is missing; reinstall minescan")
    return path


def run_demo(out_dir: str | Path, *, seed: int | None = None, size: tuple[int, int] = (4096, 4096),
             precision: str = "fp32", classifier: bool = False) -> list[Path]:
    """Generate, scan, write and score; print where everything is; return the files written."""
    width, height = size
    seed = seed if seed is not None else secrets.randbelow(2**31)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scene_path = out / "scene.tif"
    print(f"generating a {width} x {height} px Sentinel-2-like L2A scene (seed {seed}) -> {scene_path}")
    layout = write_mining_scene(scene_path, MiningSpec(width=width, height=height, seed=seed))
    truth = layout.truth()
    print(f"placed {int((truth.classes == 1).sum())} illegal and {int((truth.classes == 2).sum())} legal mining sites "
          f"and {len(layout.distractors())} look-alikes")
    if classifier:
        return _classifier_demo(out, scene_path, layout, shipped_model(precision, classifier=True), width * height * 1e-4)
    model = shipped_model(precision)
    scanner = Scanner(model)
    result = scanner.scan(scene_path)
    written = [result.write(out / name) for name in ("detections.geojson", "detections.gpkg")]
    written.append(write_truth(out / "truth.geojson", layout, scene=result.scene))
    written.append(result.write_quicklook(out / "quicklook.png", max_size=1024))
    d = result.detections
    scores = evaluate(d.boxes, d.scores, d.classes, truth.boxes, truth.classes, labels=result.labels)
    km2 = width * height * 1e-4  # 10 m pixels
    print(
        f"scanned {result.tiles} tiles with {model.name} ({scanner.backend}) in {result.seconds:.1f} s: "
        f"{result.tiles_per_second:.1f} tiles/s, {km2 / result.seconds:.0f} km2/s"
    )
    print(scores.format())
    if result.warning():
        print(f"warning: {result.warning()}")
    elif result.input_shift is not None:
        print(f"input shift {result.input_shift:.2f} (threshold {result.plan.shift_threshold:g}): the scene looks like "
              "the model's training input")
    for path in written:
        print(f"wrote {path}")
    return written


def _classifier_demo(out: Path, scene_path: Path, layout, model: Path, km2: float) -> list[Path]:
    """The heatmap half of the demo: scan, write heatmap, regions, truth and quicklook, score per cell."""
    from affine import Affine

    from minescan.results.heatmap_evaluation import evaluate_heatmap

    scanner = Scanner(model)
    result = scanner.scan(scene_path)
    label = result.band_labels[result.class_id() - 1]
    written = [result.write(out / "heatmap.tif"), result.write_regions(out / "regions.gpkg", 0.5),
               write_truth(out / "truth.geojson", layout, scene=result.scene),
               result.write_quicklook(out / "quicklook.png", max_size=1024)]
    rows, cols = result.probability().shape
    print(f"scanned {result.tiles} windows of {result.window} px every {result.stride} px with {model.name} "
          f"({scanner.backend}) in {result.seconds:.1f} s: {result.tiles_per_second:.0f} windows/s, "
          f"{km2 / result.seconds:.0f} km2/s; heatmap {cols} x {rows} cells")
    truth = layout.truth()
    scores = evaluate_heatmap(result.probability(), Affine.scale(result.stride), truth.boxes, threshold=0.5, label=label,
                              window_cells=result.window / result.stride)
    print(scores.format())
    if result.warning():
        print(f"warning: {result.warning()}")
    for path in written:
        print(f"wrote {path}")
    return written


def run_change_demo(out_dir: str | Path, *, seed: int | None = None, size: tuple[int, int] = (2048, 2048),
                    precision: str = "fp32") -> Path:
    """The morning run on generated data (``minescan demo --change``); returns the report's path.

    Writes a two-date pair of L2A products with SCL clouds (:mod:`minescan.synthetic.pairs`: sites that appear,
    grow, vanish, or hide under a cloud at one date) and a cadastre of concessions over the legal mines into
    ``out_dir/products``, scans the first date into ``out_dir/last_week`` and the second into ``out_dir/today``
    with ``baseline=last_week`` and the concessions, as ``minescan scan`` does, then sets what the run found
    beside what the generator planned.
    """
    import json
    from collections import Counter

    from minescan.synthetic.pairs import PairSpec, write_pair

    import shutil

    seed = seed if seed is not None else secrets.randbelow(2**31)
    width, height = size
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for folder in ("products", "last_week", "today"):  # the demo's own, from an earlier demo: a new pair every run
        shutil.rmtree(out / folder, ignore_errors=True)
    print(f"generating two dates of a {width} x {height} px Sentinel-2-like L2A scene with clouds (seed {seed}) "
          f"-> {out / 'products'}")
    try:
        files = write_pair(out / "products", PairSpec(base=MiningSpec(width=width, height=height, seed=seed)))
    except ValueError as exc:  # a scene too small (or too crowded) for the changes a pair plans
        raise DemoError(f"--size {width}x{height} (seed {seed}): {exc}; try a larger scene, e.g. --size 2048x2048") from None
    scanner = Scanner(shipped_model(precision))
    common = {"concessions": str(files.cadastre)}
    scanner.scan_many([files.before], out / "last_week", **common)
    scanner.scan_many([files.after], out / "today", baseline=out / "last_week", **common)
    planned = Counter(c["label"] for c in json.loads(files.expected.read_text())["changes"])
    print("planned by the generator: " + ", ".join(f"{planned.get(k, 0)} {k}" for k in ("new", "grown", "unknown", "gone",
                                                                                       "unchanged")))
    report = out / "today" / "report.html"
    print(f"open {report} (or report.md); every site with its change: {out / 'today' / 'changes.gpkg'}")
    return report
