"""Write a synthetic mining scene and its truth, e.g. to evaluate a detector on a scene it never saw.

    .venv/bin/python training/make_mining_scene.py --seed 7 --size 4096x4096 --out-dir eval-scene

writes ``scene.tif`` and ``truth.geojson`` (+ ``truth.gpkg``) in ``--out-dir``.  The demo
detector's training scenes use seeds from 1000 up (``train_demo_detector.SCENE_SEED_BASE``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere in the checkout

from minescan.synthetic.mining import MiningSpec, write_mining_scene, write_truth  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--size", default="4096x4096", help="WIDTHxHEIGHT in px (default 4096x4096)")
    p.add_argument("--out-dir", required=True)
    args = p.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    layout = write_mining_scene(out / "scene.tif", MiningSpec(width=width, height=height, seed=args.seed))
    seconds = time.perf_counter() - started
    for name in ("truth.geojson", "truth.gpkg"):
        write_truth(out / name, layout, scene="scene.tif")
    truth = layout.truth()
    print(
        f"wrote {out / 'scene.tif'} ({width} x {height} px, seed {args.seed}) in {seconds:.1f} s: "
        f"{int((truth.classes == 1).sum())} illegal and {int((truth.classes == 2).sum())} legal mining sites, "
        f"{len(layout.distractors())} distractors; truth in {out / 'truth.geojson'}, {out / 'truth.gpkg'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
