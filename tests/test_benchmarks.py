"""The benchmark scripts run and write the tables the README shows (their timings are never asserted)."""

import re
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


def test_precision_speed_scores_both_shipped_models_and_writes_its_table(tmp_path):
    out = tmp_path / "precision.md"
    subprocess.run(
        [sys.executable, str(BENCHMARKS / "precision_speed.py"), "--seeds", "7", "--size", "1280", "--rounds", "1", "--out", str(out),
         "--data", str(tmp_path / "scenes")],
        check=True, capture_output=True, text=True, timeout=300,
    )
    rows = {line.split("|")[1].split()[0]: line for line in out.read_text().splitlines() if line.startswith("| FP32") or line.startswith("| INT8")}
    assert set(rows) == {"FP32", "INT8"}
    for row in rows.values():
        cells = [c.strip() for c in row.strip("|").split("|")]
        precision_recall = [float(v) for cell in cells[1:3] for v in cell.split(" / ")]
        # Both classes, on a scene the models never saw.  INT8 gets a looser floor: its integer kernels
        # differ between CPUs (VNNI against AVX2's saturating u8s8), so a borderline box may flip.
        floor = 0.9 if row.startswith("| FP32") else 0.8
        assert len(precision_recall) == 6 and min(precision_recall) >= floor, row
        assert re.fullmatch(r"\d\.\d{3} / \d\.\d{3}, \d\.\d{3} / \d\.\d{3}", cells[3]), row  # worst scene, both classes
        assert re.fullmatch(r"\d+\.\d\dx", cells[6]) and re.fullmatch(r"\d+\.\d\dx", cells[8]), row
    assert rows["FP32"].count("| 1.00x |") == 2  # the baseline of both ratios
    assert out.read_text().startswith("Measured ") and "seeds 7" in out.read_text()
