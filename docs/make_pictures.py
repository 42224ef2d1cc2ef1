"""Redraw the README's pictures: the demo quicklook, and the morning run's quicklook and first chip.

    .venv/bin/python docs/make_pictures.py     # about a minute; writes docs/*.png (scratch in minescan-pictures/)
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from minescan import Scanner
from minescan.demo import run_change_demo, shipped_model
from minescan.synthetic.mining import MiningSpec, write_mining_scene

DOCS = Path(__file__).parent
SCRATCH = Path("minescan-pictures")


def main() -> None:
    SCRATCH.mkdir(exist_ok=True)
    scene = SCRATCH / "scene.tif"
    write_mining_scene(scene, MiningSpec(width=1536, height=1536, seed=7))
    Scanner(shipped_model()).scan(scene).write_quicklook(SCRATCH / "demo_quicklook.png", max_size=768)
    small(SCRATCH / "demo_quicklook.png", DOCS / "demo_quicklook.png")
    run_change_demo(SCRATCH / "morning", seed=7, size=(2048, 2048))
    today = SCRATCH / "morning" / "today"
    small(next(today.glob("S2*.png")), DOCS / "morning_quicklook.png", width=900)
    small(today / "chips" / "site-001.png", DOCS / "morning_chip.png")


def small(source: Path, target: Path, width: int | None = None) -> None:
    """A copy in 256 colours (a third of the bytes, for the repository), at most ``width`` px wide."""
    image = Image.open(source).convert("RGB")
    if width and image.width > width:
        image = image.resize((width, round(image.height * width / image.width)), Image.Resampling.LANCZOS)
    image.quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE).save(target, optimize=True)


if __name__ == "__main__":
    main()
