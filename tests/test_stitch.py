import numpy as np

from minescan.model.detections import TileDetections
from minescan.raster.grid import TileGrid
from minescan.scan.stitch import StitchSettings, Stitcher


def _stitch(width, height, size, overlap, objects, settings=None, flush_rows=False):
    """Simulate a perfect detector: each tile reports the part of each object it sees (scene boxes).

    ``flush_rows`` settles objects after every tile row, as a scan does.
    """
    stitcher = Stitcher(settings)
    grid = TileGrid(width, height, size, overlap)
    rows = grid.row_starts
    for tile in grid:
        if flush_rows and tile.col == 0 and tile.row > 0:
            stitcher.flush(rows[tile.row])
        boxes, classes = [], []
        for (x0, y0, x1, y1), klass in objects:
            cx0, cy0 = max(x0, tile.col_off), max(y0, tile.row_off)
            cx1, cy1 = min(x1, tile.col_off + tile.valid_width), min(y1, tile.row_off + tile.valid_height)
            if cx1 > cx0 and cy1 > cy0:
                boxes.append((cx0 - tile.col_off, cy0 - tile.row_off, cx1 - tile.col_off, cy1 - tile.row_off))
                classes.append(klass)
        n = len(boxes)
        stitcher.add(tile, TileDetections(np.array(boxes, np.float64).reshape(n, 4), np.full(n, 0.9, np.float32), np.array(classes, np.int32)))
    return stitcher.finish()


# 1000 x 1000 scene, tiles of 256 with overlap 64: tile starts 0, 192, 384, 576, 744.
def test_object_across_a_vertical_border_is_reported_once_whole():
    result = _stitch(1000, 1000, 256, 64, [((240, 100, 280, 130), 1)])
    assert result.boxes.tolist() == [[240, 100, 280, 130]]


def test_object_across_a_horizontal_border_is_reported_once_whole():
    result = _stitch(1000, 1000, 256, 64, [((500, 430, 530, 470), 2)])
    assert result.boxes.tolist() == [[500, 430, 530, 470]] and result.classes.tolist() == [2]


def test_object_across_a_four_tile_corner_is_reported_once_whole():
    result = _stitch(1000, 1000, 256, 64, [((420, 420, 460, 460), 1)])
    assert result.boxes.tolist() == [[420, 420, 460, 460]]


def test_object_larger_than_the_overlap_is_reassembled_from_its_fragments():
    result = _stitch(1000, 1000, 256, 64, [((150, 150, 420, 300), 1)])
    assert result.boxes.tolist() == [[150, 150, 420, 300]]


def test_neighbouring_objects_stay_separate_and_classes_are_kept_apart():
    objects = [((230, 100, 250, 120), 1), ((254, 100, 274, 120), 1), ((240, 300, 270, 330), 1), ((240, 300, 270, 330), 2)]
    result = _stitch(1000, 1000, 256, 64, objects)
    assert sorted(map(tuple, result.boxes.tolist())) == sorted(tuple(map(float, b)) for b, _ in objects)
    agnostic = _stitch(1000, 1000, 256, 64, objects, StitchSettings(class_agnostic=True))
    assert len(agnostic) == 3


def test_boxes_of_the_same_tile_are_never_merged():
    stitcher = Stitcher()
    tile = next(iter(TileGrid(500, 500, 256, 64)))
    boxes = np.array([[10, 10, 50, 50], [12, 12, 52, 52]], np.float64)
    stitcher.add(tile, TileDetections(boxes, np.array([0.9, 0.8], np.float32), np.array([1, 1], np.int32)))
    assert len(stitcher.finish()) == 2


def test_many_objects_across_every_border_each_once():
    rng = np.random.default_rng(5)
    objects = []
    for start in (192, 384, 576, 744):
        for along in range(40, 960, 90):
            x = start - int(rng.integers(2, 30))
            objects.append(((x, along, x + 32, along + 24), int(rng.integers(1, 3))))
            objects.append(((along, x, along + 24, x + 32), int(rng.integers(1, 3))))
    objects = [o for i, o in enumerate(objects) if not any(
        max(o[0][0], p[0][0]) < min(o[0][2], p[0][2]) and max(o[0][1], p[0][1]) < min(o[0][3], p[0][3]) for p in objects[:i])]
    result = _stitch(1000, 1000, 256, 64, objects)
    assert sorted(map(tuple, result.boxes.tolist())) == sorted(tuple(map(float, b)) for b, _ in objects)


def test_a_small_object_placed_a_few_pixels_apart_by_two_tiles_is_reported_once():
    # A trained model's box for a 20 px pit differs by 4 px between two tiles' views (IoU 0.47).
    grid = list(TileGrid(1000, 1000, 256, 64))
    left, right = grid[0], grid[1]  # columns 0-256 and 192-448: the pit at 210-230 lies in both
    stitcher = Stitcher()
    stitcher.add(left, TileDetections(np.array([[210.0, 100, 230, 120]]), np.array([0.95], np.float32), np.array([1], np.int32)))
    stitcher.add(right, TileDetections(np.array([[214.0 - 192, 104, 234 - 192, 124]]), np.array([0.9], np.float32), np.array([1], np.int32)))
    once = stitcher.finish()
    assert once.boxes.tolist() == [[210, 100, 230, 120]]  # the higher-scoring box
    strict = Stitcher(StitchSettings(iou_threshold=0.5))  # the common 0.5 keeps the twin as a false positive
    strict.add(left, TileDetections(np.array([[210.0, 100, 230, 120]]), np.array([0.95], np.float32), np.array([1], np.int32)))
    strict.add(right, TileDetections(np.array([[22.0, 104, 42, 124]]), np.array([0.9], np.float32), np.array([1], np.int32)))
    assert len(strict.finish()) == 2


def test_row_done_settles_what_no_later_row_can_touch():
    from minescan.raster.strips import RowEnd

    grid = TileGrid(1000, 1000, 256, 64)
    stitcher = Stitcher()
    first_row = [t for t in grid if t.row == 0]
    stitcher.add(first_row[0], TileDetections(np.array([[10.0, 10, 30, 30], [10.0, 180, 30, 250]]), np.array([0.9, 0.8], np.float32), np.array([1, 1], np.int32)))
    # The next row starts at scene row 192: the box reaching row 250 waits for it, the other settles.
    assert stitcher.row_done(RowEnd(0, len(first_row), grid.row_starts[1])) == 1 and stitcher.pending == 1
    assert stitcher.row_done(RowEnd(len(grid.row_starts) - 1, 0, None)) == 1 and stitcher.pending == 0
    assert len(stitcher.finish()) == 2
