"""The demo classifier's training windows, training script and architecture benchmark (~30 s in all).

Windows are labelled by window_truth and render as a scan renders the scene; a few dozen steps of the small CNN
lower the loss and save model.keras; the benchmark scores the shipped classifier on a scene it never saw.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "training" / "train_demo_classifier.py"


def test_training_windows_are_labelled_by_window_truth_and_rendered_as_a_scan_renders_them(tmp_path):
    from minescan.model.metadata import Normalisation
    from minescan.raster.radiometry import percentile_stretch
    from minescan.raster.scene import Scene
    from minescan.synthetic.mining import MiningSpec, write_mining_scene
    from training.classifier_windows import WINDOW, WindowMix, render_scene_rgb, render_window_scene, sample_windows

    stretch = Normalisation("stretch", low=2, high=98)
    spec = MiningSpec(width=768, height=768, seed=3, illegal_density=8, legal_density=4, distractor_density=12)
    scene = render_window_scene(spec, stretch)
    images, labels, kinds = sample_windows([scene], 64, np.random.default_rng(0), stretch, WindowMix(0.5, 0.25, 0.1))
    assert images.shape == (64, WINDOW, WINDOW, 3) and images.dtype == np.uint8
    assert len(scene.scene.boxes) and len(scene.distractors)
    assert (labels[kinds == 1] == 1).all() and (labels[kinds >= 2] == 0).all() and labels.mean() >= 0.45
    # Unaugmented, the whole scene renders exactly as the scan renders the written GeoTIFF (the stretch measured on
    # the scan's own statistics sample, whatever the scene's size).
    write_mining_scene(tmp_path / "scene.tif", spec)
    with Scene(str(tmp_path / "scene.tif"), bands=(3, 2, 1)) as written:
        sample = written.statistics_sample()
        from rasterio.windows import Window

        data, nodata = written.read_window(Window(0, 0, 768, 768))
    scan_rgb = percentile_stretch(sample.data, ~sample.nodata, 2, 98).apply(data, nodata)
    np.testing.assert_array_equal(render_scene_rgb(scene, stretch), scan_rgb)


def test_short_training_run_lowers_the_loss_and_saves_the_model(tmp_path):
    pytest.importorskip("tensorflow")
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--arch", "small_cnn", "--out", str(tmp_path), "--steps", "40", "--batch", "16",
         "--scenes", "1", "--scene-size", "512", "--log-every", "10", "--check-decrease"],
        capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "loss decreased" in run.stdout
    assert (tmp_path / "model.keras").is_file()
    log = json.loads((tmp_path / "training_log.json").read_text())
    assert (log["arch"], log["labels"], log["steps"], [row["step"] for row in log["losses"]]) == (
        "small_cnn", ["other", "mining"], 40, [10, 20, 30, 40])
    assert log["scene_seeds"] == [3000] and log["parameters"] > 0
    assert "small_cnn" in (tmp_path / "training_log.md").read_text()


def test_the_architecture_benchmark_scores_the_shipped_classifier_on_a_fresh_scene(tmp_path):
    pytest.importorskip("tensorflow")
    out = tmp_path / "classifier_architectures.md"
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "classifier_architectures.py"), "--keras", str(ROOT / "training" / "demo_classifier"),
         "--seeds", "777", "--size", "2048", "--train-scenes", "1", "--rounds", "1", "--timed-batches", "3",
         "--out", str(out), "--json", str(tmp_path / "scores.json"), "--data", str(tmp_path / "scenes")],
        capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    text = out.read_text()
    assert text.startswith("Measured ") and "seeds 777" in text and "| Keras small_cnn | 296,554 |" in text
    row = json.loads((tmp_path / "scores.json").read_text())["results"][0]
    assert row["fresh"]["f1"] >= 0.9 and row["fresh"]["auc"] >= 0.99, row["fresh"]  # 76 mining windows, never trained on
    assert row["train_split"]["seeds"] == [3000] and row["ms_per_window"] > 0


def test_rank_based_roc_auc_matches_counting_pairs_with_ties_as_half():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from classifier_architectures import roc_auc

    rng = np.random.default_rng(1)
    scores = rng.integers(0, 6, 200) / 5.0  # many ties
    labels = rng.random(200) < 0.3
    pos, neg = scores[labels], scores[~labels]
    pairs = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    assert roc_auc(scores, labels) == pytest.approx(pairs)
    assert roc_auc(np.array([0.1, 0.9]), np.array([False, True])) == 1.0
    assert np.isnan(roc_auc(np.array([0.1, 0.9]), np.array([True, True])))
