"""The benchmark scripts run and write the tables the README shows (their timings are never asserted)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_heatmap_scene_compares_the_heatmap_scan_with_a_detection_scan_of_the_same_scene(tmp_path):
    sys.path.insert(0, str(Path(__file__).parents[1]))
    from minescan.synthetic.mining import MiningSpec, write_mining_scene

    scene = tmp_path / "scene.tif"
    write_mining_scene(scene, MiningSpec(width=1024, height=768, seed=5))
    out = tmp_path / "heatmap_scene.md"
    subprocess.run([sys.executable, str(BENCHMARKS / "heatmap_scene.py"), "--scene", str(scene), "--runs", "1",
                    "--out", str(out)], check=True, capture_output=True, text=True, timeout=300)
    rows = [line for line in out.read_text().splitlines() if line.startswith("| heatmap") or line.startswith("| detection")]
    assert len(rows) == 3, out.read_text()
    cells = {row.split("|")[1].strip(): [c.strip() for c in row.strip("|").split("|")] for row in rows}
    # 64 px windows every 64 px over 1024 x 768: 16 x 12; every 32 px (the default): 31 x 23
    assert cells["heatmap, stride 64"][1] == "192" and cells["heatmap, default stride (half the window)"][1] == "713"
    assert cells["detection scan (demo detector)"][6] == "1.00x"  # the baseline of the memory ratio


def test_real_speed_scans_the_sparse_scene_with_each_lever_and_writes_its_table(tmp_path):
    out = tmp_path / "real_speed.md"
    subprocess.run(
        [sys.executable, str(BENCHMARKS / "real_speed.py"), "--size", "3072", "--input", "tif", "--gate-threshold", "0.9",
         "--cache", str(tmp_path / "cache"), "--out", str(out)],
        check=True, capture_output=True, text=True, timeout=600,
    )
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in out.read_text().splitlines()
            if line.startswith(("| plain", "| +", "| all"))]
    assert [r[0] for r in rows] == ["plain FP32", "+ INT8", "+ proposal budget K=50", "+ gate", "all together (INT8, K=50, gate)"]
    run = [int(r[6].split(" / ")[0]) for r in rows]
    assert run[:3] == [36, 36, 36] and 0 < run[3] == run[4] < 36  # the gate keeps tiles from the detector, nothing else does
    assert rows[0][3] == "-" and rows[3][3] == "`demo_classifier.onnx` at 0.9"
    recall = [float(r[8].split()[0]) for r in rows]
    assert recall[0] > 0.5 and recall[4] == recall[3]  # a trained pair finds the sites, gated or not


def test_ray_scaling_runs_each_configuration_and_writes_its_table(tmp_path):
    pytest.importorskip("ray")
    out = tmp_path / "ray_scaling.md"
    subprocess.run([sys.executable, str(BENCHMARKS / "ray_scaling.py"), "--scenes", "2", "--size", "700",
                    "--cache", str(tmp_path / "cache"), "--out", str(out)],
                   check=True, capture_output=True, text=True, timeout=600)
    rows = {cells[0]: cells[1:] for cells in ([c.strip() for c in line.strip("|").split("|")]
                                              for line in out.read_text().splitlines() if line.startswith("| local") or line.startswith("| Ray"))}
    assert list(rows) == ["local, 1 worker", "local, 2 workers", "Ray, 1 worker", "Ray, 2 workers"]
    assert all(float(r[0]) > 0 for r in rows.values())
    assert rows["Ray, 1 worker"][2].endswith("without start-up)") and rows["Ray, 2 workers"][3] != "-"
    assert (tmp_path / "cache" / "run-0-Ray-2workers" / "run_summary.json").is_file()
