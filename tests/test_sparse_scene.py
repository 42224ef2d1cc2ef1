"""The realistic benchmark scene: mining rare and clustered, look-alikes elsewhere, GeoTIFF and .SAFE alike, seeded."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from minescan.cli import main as cli_main
from minescan.raster.grid import TileGrid
from minescan.raster.sources.resolve import resolve
from minescan.results.read import read_result_file
from minescan.synthetic.mining import DISTRACTOR_KINDS, render_strip
from minescan.synthetic.sparse import SparseSpec, mining_tiles, plan_sparse, write_sparse_scene
from testkit.products import ProductSpec, write_safe_from_raster

SPEC = SparseSpec(size=3072, seed=11)  # the smallest scene where 5 % of the tiles is at least one (36 tiles)
PRODUCT = ProductSpec(tile="T30PXT", sensing="20240115T103321")


def _tiles_with_mining(width: int, boxes: np.ndarray) -> set[tuple[int, int]]:
    """Grid tiles (the scan's own TileGrid, 640 px, overlap 128) overlapping any box: counted independently of sparse.py."""
    found = set()
    for tile in TileGrid(width, width, 640, 128):
        x0, y0 = tile.col_off, tile.row_off
        x1, y1 = x0 + tile.valid_width, y0 + tile.valid_height
        if np.any((boxes[:, 0] < x1) & (boxes[:, 2] > x0) & (boxes[:, 1] < y1) & (boxes[:, 3] > y0)):
            found.add((tile.row, tile.col))
    return found


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sparse")
    written = write_sparse_scene(folder, SPEC)
    safe = write_safe_from_raster(folder, written.tif, PRODUCT)
    return written, safe


@pytest.mark.parametrize("spec", [SPEC, SparseSpec(size=4096, seed=3), SparseSpec(seed=0), SparseSpec(seed=7)],
                         ids=["3072", "4096", "full-seed0", "full-seed7"])
def test_mining_covers_at_most_five_percent_of_the_tiles_and_some(spec):
    layout = plan_sparse(spec)
    truth = layout.truth()
    grid = TileGrid(spec.size, spec.size, 640, 128)
    touched = _tiles_with_mining(spec.size, truth.boxes)
    assert 0 < len(touched) <= 0.05 * len(grid)
    assert touched == mining_tiles(spec, truth.boxes)
    assert set(truth.classes.tolist()) == {1, 2}
    if spec.size == 10980:  # the full scene: a few districts, each a 2 x 2 block of tiles, and enough sites to measure recall
        assert len(grid) == 484 and len(touched) <= 24
        assert len(truth.classes) >= 30
        rows = sorted({r for r, _ in touched})
        assert len(rows) <= 2 * spec.districts


def test_look_alikes_spread_outside_the_mining_districts(scene):
    written, _ = scene
    layout = written.layout
    distractors = layout.distractors()
    assert {s.kind for s in distractors} == set(DISTRACTOR_KINDS)
    assert len(layout.rivers) > 1  # the district's own river and the scene's
    assert len(distractors) >= 0.5 * SPEC.distractor_density * SPEC.size**2 / 1e6
    mining = _tiles_with_mining(SPEC.size, layout.truth().boxes)
    # Almost every look-alike lies in tiles without mining (a tile next to a district may reach into its margin).
    clean = [s for s in distractors if not (_tiles_with_mining(SPEC.size, np.array([s.box], float)) & mining)]
    assert len(clean) >= 0.9 * len(distractors)
    # ... and they are drawn: a quarry's rock face is far brighter in blue than any background cover.
    with rasterio.open(written.tif) as src:
        for quarry in [s for s in distractors if s.kind == "quarry"][:5]:
            x0, y0, x1, y1 = quarry.box
            cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
            blue = src.read(1, window=((cy - 2, cy + 3), (cx - 2, cx + 3)))
            assert np.median(blue) > 1500  # quarry rock 0.21 x (0.85-1.15); background covers <= 0.085


def test_geotiff_and_safe_hold_the_same_pixels(scene, tmp_path):
    written, safe = scene
    source = resolve(str(safe), tmp_path / "vrt")
    assert source.kind == "safe" and source.offset == -1000.0 and source.nodata == 0.0
    with rasterio.open(written.tif) as tif, rasterio.open(source.dataset) as product:
        assert (product.width, product.height) == (tif.width, tif.height) == (SPEC.size, SPEC.size)
        assert product.crs == tif.crs and product.transform == tif.transform
        reference = tif.read((3, 2, 1)).astype(np.int64)  # red, green, blue
        stored = product.read(source.bands or (1, 2, 3)).astype(np.int64)
    assert reference.min() > 0  # no nodata in the scene
    np.testing.assert_array_equal(stored - 1000, reference)
    # Bands are JPEG 2000 in 1024 px tiles, like real products, and lossless: B08 too.
    band = next(safe.glob("GRANULE/*/IMG_DATA/R10m/*_B08_10m.jp2"))
    with rasterio.open(band) as jp2, rasterio.open(written.tif) as tif:
        assert jp2.driver == "JP2OpenJPEG" and jp2.block_shapes == [(1024, 1024)]
        np.testing.assert_array_equal(jp2.read(1).astype(np.int64) - 1000, tif.read(4))


def test_truth_file_places_the_sites_and_evaluates(scene, capsys):
    written, _ = scene
    truth = written.layout.truth()
    read = read_result_file(written.truth, scores=False)
    with rasterio.open(written.tif) as src:
        boxes = read.boxes(src.crs)
        inverse = ~src.transform
    cols_rows = np.array([[*(inverse * (b[0], b[3])), *(inverse * (b[2], b[1]))] for b in boxes])  # (x0, y0, x1, y1) px
    order = np.lexsort(cols_rows.T[::-1])
    expected = np.lexsort(truth.boxes.T[::-1])
    np.testing.assert_allclose(cols_rows[order], truth.boxes[expected], atol=1e-6)
    np.testing.assert_array_equal(read.class_ids[order], truth.classes[expected])
    assert cli_main(["evaluate", str(written.truth), str(written.truth)]) == 0
    report = capsys.readouterr().out
    assert "illegal_mining" in report and "legal_mining" in report and "mAP@0.5 1.000" in report


def test_same_seed_same_scene_other_seed_other_scene():
    a, b, c = plan_sparse(SPEC), plan_sparse(SPEC), plan_sparse(SparseSpec(size=SPEC.size, seed=SPEC.seed + 1))
    assert [(s.kind, s.box) for s in a.sites] == [(s.kind, s.box) for s in b.sites]
    assert all(np.array_equal(s.materials, t.materials) for s, t in zip(a.sites, b.sites))
    assert [s.box for s in a.sites] != [s.box for s in c.sites]
    top = int(a.truth().boxes[0, 1]) // 256 * 256  # a strip through a mining site
    np.testing.assert_array_equal(render_strip(a, top, 256), render_strip(b, top, 256))
    assert not np.array_equal(render_strip(a, top, 256), render_strip(c, top, 256))


def test_too_small_a_scene_for_the_budget_is_refused():
    with pytest.raises(ValueError, match="less than one"):
        plan_sparse(SparseSpec(size=2048))
