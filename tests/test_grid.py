import numpy as np
import pytest

from minescan.raster.grid import TileGrid, TileGridError


@pytest.mark.parametrize(
    "width,height,size,overlap",
    [(1000, 700, 640, 128), (5000, 4000, 640, 128), (1281, 641, 640, 64), (1280, 1280, 640, 0), (300, 200, 256, 32), (257, 5000, 256, 100)],
)
def test_grid_covers_every_pixel_within_the_scene(width, height, size, overlap):
    grid = TileGrid(width, height, size, overlap)
    covered = np.zeros((height, width), np.int32)
    for tile in grid:
        if width >= size:
            assert 0 <= tile.col_off and tile.col_off + tile.width <= width
        if height >= size:
            assert 0 <= tile.row_off and tile.row_off + tile.height <= height
        covered[tile.row_off : tile.row_off + tile.valid_height, tile.col_off : tile.col_off + tile.valid_width] += 1
    assert covered.min() >= 1
    assert len(list(grid)) == len(grid)


def test_consecutive_tiles_overlap_by_at_least_the_overlap_and_the_last_ends_on_the_edge():
    grid = TileGrid(2000, 1500, 640, 128)
    for starts, extent in ((grid.col_starts, 2000), (grid.row_starts, 1500)):
        assert starts[0] == 0 and starts[-1] + 640 == extent
        assert all(b - a <= 640 - 128 for a, b in zip(starts, starts[1:]))


def test_interior_edges_are_the_ones_with_a_neighbour():
    tiles = {(t.row, t.col): t for t in TileGrid(1500, 1500, 640, 128)}
    corner, middle = tiles[(0, 0)], tiles[(1, 1)]
    assert (corner.interior_left, corner.interior_top, corner.interior_right, corner.interior_bottom) == (False, False, True, True)
    assert all((middle.interior_left, middle.interior_top, middle.interior_right, middle.interior_bottom))
    last = tiles[max(tiles)]
    assert not last.interior_right and not last.interior_bottom


def test_scene_smaller_than_a_tile_gets_one_padded_tile():
    (tile,) = list(TileGrid(300, 200, 640, 128))
    assert (tile.width, tile.height, tile.valid_width, tile.valid_height) == (640, 640, 300, 200)


@pytest.mark.parametrize("size,overlap,message", [(640, 640, "overlap 640"), (640, -1, "overlap -1"), (8, 0, "tile size 8")])
def test_bad_grid_settings_are_refused(size, overlap, message):
    with pytest.raises(TileGridError, match=message):
        TileGrid(1000, 1000, size, overlap)


def test_a_detection_scan_refuses_overlap_past_half_a_tile(make_scene, square_model):
    # The grid itself allows a classifier's dense windows; the detection plan keeps the stitcher's rule.
    from minescan import Scanner

    path, _ = make_scene(width=1000, height=1000, objects=2)
    with pytest.raises(TileGridError, match=r"overlap 400 px must be between 0 and half the tile size \(320 px\)"):
        Scanner(str(square_model)).plan(path, tile=640, overlap=400)
