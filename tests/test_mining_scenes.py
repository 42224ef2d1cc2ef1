"""Generated mining scenes: sites where the truth says, with the described reflectance, seeded, written in strips."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import rasterio

from minescan.results.read import read_result_file
from minescan.synthetic.mining import (
    CLEAR,
    DISTRACTOR_KINDS,
    MINING_LABELS,
    MiningSpec,
    plan_scene,
    write_mining_scene,
    write_truth,
)

SPEC = MiningSpec(width=1024, height=768, seed=5, illegal_density=12, legal_density=4, distractor_density=16)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """The scene of SPEC as reflectance [768, 1024, 4] (B02, B03, B04, B08) and its layout."""
    path = tmp_path_factory.mktemp("mining") / "scene.tif"
    layout = write_mining_scene(path, SPEC)
    with rasterio.open(path) as src:
        assert src.descriptions == ("B02", "B03", "B04", "B08") and src.dtypes[0] == "uint16"
        reflectance = np.moveaxis(src.read(), 0, -1) / 10000.0
    return reflectance, layout, path


def _pixels(reflectance: np.ndarray, box) -> np.ndarray:
    x0, y0, x1, y1 = (int(v) for v in box)
    return reflectance[y0:y1, x0:x1].reshape(-1, 4)


def test_requested_classes_and_distractors_are_placed():
    layout = plan_scene(SPEC)
    truth = layout.truth()
    assert sorted(MINING_LABELS) == sorted(set(truth.classes.tolist()))
    assert np.sum(truth.classes == 1) == SPEC.count(SPEC.illegal_density)
    assert np.sum(truth.classes == 2) == SPEC.count(SPEC.legal_density)
    assert {s.kind for s in layout.distractors()} == set(DISTRACTOR_KINDS)
    sides = {c: truth.boxes[truth.classes == c, 2:] - truth.boxes[truth.classes == c, :2] for c in (1, 2)}
    assert 10 <= sides[1].min() and sides[1].max() <= 60
    assert 40 <= sides[2].min() and sides[2].max() <= 120 and sides[2].max(axis=1).min() >= 60


def test_truth_boxes_are_tight_and_disjoint():
    layout = plan_scene(SPEC)
    for site in layout.sites:
        drawn = site.materials != CLEAR
        assert drawn[0].any() and drawn[-1].any() and drawn[:, 0].any() and drawn[:, -1].any(), site.kind
    boxes = np.array([s.box for s in layout.sites], float)
    x0, y0, x1, y1 = boxes.T
    overlap = (np.minimum(x1[:, None], x1) > np.maximum(x0[:, None], x0)) & (np.minimum(y1[:, None], y1) > np.maximum(y0[:, None], y0))
    assert overlap.sum() == len(boxes)  # each box overlaps only itself


def test_band_values_at_truth_positions(scene):
    reflectance, layout, _ = scene
    truth = layout.truth()
    for box, klass in zip(truth.boxes, truth.classes):
        px = _pixels(reflectance, box)
        b02, b03, b04, b08 = px.T
        if klass == 1:  # bare pits (bright red) and flooded ones (green > red or turbid, dark NIR)
            assert (b04 > 0.17).any()
            assert ((b08 < 0.09) & (b03 > b02)).any()
        else:  # bright benches, a dark pit lake, grey tailings
            assert (b04 > 0.2).mean() > 0.1
            assert ((b08 < 0.04) & (b03 > b04)).any()
    background = np.ones(reflectance.shape[:2], bool)
    for site in layout.sites:
        x0, y0, x1, y1 = site.box
        background[y0:y1, x0:x1] = False
    b02, b03, b04, b08 = reflectance[background].T
    assert np.median(b08) > 0.2 and np.median(b04) < 0.12  # mostly vegetation
    assert 0 < b02.min() and b08.max() < 0.5


def test_illegal_sites_follow_rivers():
    layout = plan_scene(MiningSpec(width=1024, height=1024, seed=2, illegal_density=10, river_along_fraction=1.0))
    for site in (s for s in layout.sites if s.class_id == 1):
        x0, y0, x1, y1 = site.box
        rows, cols = np.arange(max(0, y0 - 8), y1 + 8), np.arange(max(0, x0 - 8), x1 + 8)
        assert any(river.mask(rows, cols).any() for river in layout.rivers)


def test_same_seed_same_scene_other_seed_other_scene(tmp_path):
    small = MiningSpec(width=256, height=320, seed=11, illegal_density=20, legal_density=10, strip=100)
    paths = [tmp_path / f"{i}.tif" for i in range(3)]
    layouts = [write_mining_scene(paths[0], small), write_mining_scene(paths[1], small),
               write_mining_scene(paths[2], MiningSpec(width=256, height=320, seed=12, illegal_density=20, legal_density=10))]
    data = []
    for path in paths:
        with rasterio.open(path) as src:
            data.append(src.read())
    assert np.array_equal(data[0], data[1]) and not np.array_equal(data[0], data[2])
    assert np.array_equal(layouts[0].truth().boxes, layouts[1].truth().boxes)
    assert not np.array_equal(layouts[0].truth().boxes, layouts[2].truth().boxes)


def test_memory_is_bounded_by_the_strip(tmp_path):
    spec = MiningSpec(width=1024, height=4096, seed=1, strip=256)
    full_scene_float = spec.width * spec.height * 4 * 4
    tracemalloc.start()
    write_mining_scene(tmp_path / "tall.tif", spec)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 0.3 * full_scene_float, f"peak {peak / 1e6:.0f} MB for a {full_scene_float / 1e6:.0f} MB scene"


def test_truth_file_holds_the_mining_sites(scene, tmp_path):
    _, layout, _ = scene
    truth = layout.truth()
    written = read_result_file(write_truth(tmp_path / "truth.gpkg", layout), scores=False)
    assert written.crs.to_epsg() == SPEC.epsg
    assert np.array_equal(written.class_ids, truth.classes)
    assert written.labels == MINING_LABELS
    x0, y0 = SPEC.origin
    expected = np.column_stack([x0 + truth.boxes[:, 0] * 10, y0 - truth.boxes[:, 3] * 10, x0 + truth.boxes[:, 2] * 10, y0 - truth.boxes[:, 1] * 10])
    assert np.allclose(written.boxes(written.crs), expected)
