"""The Ray Data building block (minescan.scaleout.ray_data) on a generated mining scene and the demo detector.

One local Ray (2 CPUs) for the module; few tiles, since every Ray Data stage
starts actors.  The reference is the detector called directly on the tiles
the scan's own reader renders.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

from ray.data import ActorPoolStrategy  # noqa: E402

from minescan import Scanner  # noqa: E402
from minescan.defaults import DEFAULTS  # noqa: E402
from minescan.demo import shipped_model  # noqa: E402
from minescan.engine import load_detector  # noqa: E402
from minescan.raster.strips import CutTile, StripReader  # noqa: E402
from minescan.results.evaluation import compare  # noqa: E402
from minescan.scaleout import ray_data  # noqa: E402
from minescan.scaleout.ray_data import DetectTiles, RayDataError, ReadTiles, TileBatchError, tile_rows  # noqa: E402
from minescan.synthetic.mining import MINING_LABELS, MiningSpec, write_mining_scene  # noqa: E402

DEMO = shipped_model()
SPEC = MiningSpec(width=1152, height=1152, seed=3, illegal_density=4, legal_density=2, distractor_density=4)  # 2 x 2 tiles
TIMES: dict[str, float] = {}


@pytest.fixture(scope="module")
def ray_session():
    start = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    TIMES["ray.init"] = time.perf_counter() - start
    yield
    ray.shutdown()
    print(f"\nray_data timings: {', '.join(f'{k} {v:.1f} s' for k, v in TIMES.items())}")


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """The scene, its truth, its tiles as the scan's reader renders them, and the detector's answer for each."""
    path = tmp_path_factory.mktemp("ray_data") / "scene.tif"
    truth = write_mining_scene(path, SPEC).truth()
    plan = Scanner(DEMO, backend="cpu").plan(path)
    with plan.open_scene() as opened:
        rendered = [t for t in StripReader(opened, plan.grid, 1, radiometry=plan.radiometry) if isinstance(t, CutTile)]
    tiles = np.stack([t.rgb for t in rendered])
    detections = load_detector(DEMO, backend="cpu").detect(tiles, DEFAULTS.score_threshold)
    return path, truth, [t.tile for t in rendered], tiles, detections


def _ids(tiles) -> list[str]:
    return [f"r{t.row}c{t.col}" for t in tiles]


def _assert_same(rows, expected) -> None:
    for row, want in zip(rows, expected):
        np.testing.assert_array_equal(row["boxes"], want.boxes)
        np.testing.assert_array_equal(row["scores"], want.scores)
        np.testing.assert_array_equal(row["classes"], want.classes)
        assert list(row["labels"]) == [MINING_LABELS[int(c)] for c in want.classes]


def test_map_batches_answers_what_the_detector_answers(ray_session, scene):
    _, truth, grid_tiles, tiles, expected = scene
    # Every site lies wholly inside some tile (objects <= 120 px, overlap 128); that tile finds it.
    for tile, found in zip(grid_tiles, expected):
        x0, y0 = tile.col_off, tile.row_off
        inside = ((truth.boxes[:, 0] >= x0) & (truth.boxes[:, 1] >= y0)
                  & (truth.boxes[:, 2] <= x0 + tile.width) & (truth.boxes[:, 3] <= y0 + tile.height))
        local = truth.boxes[inside] - [x0, y0, x0, y0]
        assert compare(found.boxes, found.scores, found.classes, local, truth.classes[inside]).matched == inside.sum()
    assert sum(len(d) for d in expected) >= len(truth.boxes) == 8

    items = [{"image": image, "tile_id": name, "n": i} for i, (image, name) in enumerate(zip(tiles, _ids(grid_tiles)))]
    start = time.perf_counter()
    out = ray.data.from_items(items).map_batches(
        DetectTiles, fn_constructor_kwargs={"model": str(DEMO), "score_threshold": DEFAULTS.score_threshold},
        batch_size=3, compute=ActorPoolStrategy(size=1), batch_format="numpy")
    rows = sorted(out.take_all(), key=lambda r: r["n"])
    TIMES["first map_batches"] = time.perf_counter() - start
    assert [r["tile_id"] for r in rows] == _ids(grid_tiles) and set(rows[0]) == {
        "tile_id", "n", "boxes", "scores", "classes", "labels"}  # other columns pass through, the images are dropped
    _assert_same(rows, expected)
    assert rows[0]["boxes"].dtype == np.float64 and rows[0]["scores"].dtype == np.float32 and rows[0]["classes"].dtype == np.int32
    assert all(isinstance(r["labels"], list) for r in rows)
    frame = out.to_pandas().sort_values("n")
    for (_, row), want in zip(frame.iterrows(), expected):
        np.testing.assert_array_equal(row["boxes"], want.boxes)
        assert [str(v) for v in row["labels"]] == [MINING_LABELS[int(c)] for c in want.classes]


def test_the_callable_works_without_ray_and_keeps_images_on_request(scene):
    _, _, grid_tiles, tiles, expected = scene
    detect = DetectTiles(DEMO, backend="cpu", threads=1, keep_images=True)
    images = np.empty(2, object)
    images[0], images[1] = tiles[0], tiles[1]  # variable-shaped columns come as object arrays
    out = detect({"image": images, "id": np.array(["a", "b"])})
    assert out["image"] is images and out["id"].tolist() == ["a", "b"]
    _assert_same([{k: out[k][i] for k in out} for i in range(2)], expected[:2])
    empty = detect({"image": np.zeros((0, 640, 640, 3), np.uint8)})
    assert len(empty["boxes"]) == 0


def test_a_classifier_answers_probabilities(scene):
    _, _, _, tiles, _ = scene
    classify = DetectTiles(shipped_model(classifier=True), backend="cpu", threads=1)
    windows = np.ascontiguousarray(tiles[:, :64, :64])
    out = classify({"image": windows, "id": np.arange(len(windows))})
    reference = load_detector(shipped_model(classifier=True), backend="cpu").detect(windows)
    np.testing.assert_array_equal(out["probabilities"], np.stack(reference))
    assert set(out) == {"id", "probabilities"} and classify.class_names == ["other", "mining"]
    with pytest.raises(TileBatchError, match=r"column 'image' holds 640x640 px tiles, but demo_classifier\.onnx takes 64x64 px"):
        classify({"image": tiles[:1]})


@pytest.mark.parametrize("batch, message", [
    ({"tile": np.zeros((1, 64, 64, 3), np.uint8)}, "the batch has no column 'image' (uint8 [N, H, W, 3] RGB tiles; see image_column); its columns: tile"),
    ({"image": np.zeros((1, 64, 64, 3), np.float32)}, "column 'image' is float32 [1, 64, 64, 3]; tiles must be uint8 [N, H, W, 3] RGB"),
    ({"image": np.zeros((1, 64, 64, 4), np.uint8)}, "column 'image' is uint8 [1, 64, 64, 4] (4 channels); tiles must be uint8 [N, H, W, 3] RGB"),
    ({"image": np.zeros((2, 64, 64), np.uint8)}, "column 'image' is uint8 [2, 64, 64]; tiles must be uint8 [N, H, W, 3] RGB"),
    ({"image": np.array([np.zeros((64, 64, 3), np.uint8), np.zeros((32, 32, 3), np.uint8)], dtype=object)},
     "column 'image' row 1 is 32x32 px, row 0 64x64 px; one batch holds tiles of one size"),
    ({"image": np.zeros((1, 64, 64, 3), np.uint8), "boxes": np.zeros(1)},
     "the batch already has a column 'boxes', which DetectTiles adds; rename it first"),
])
def test_bad_batches_are_refused_in_one_line(batch, message):
    detect = DetectTiles(DEMO, backend="cpu", threads=1)
    with pytest.raises(TileBatchError, match=re.escape(message)):
        detect(batch)


def test_a_bad_batch_in_a_pipeline_names_the_column(ray_session):
    # Ray Data wraps what a UDF raises in its UserCodeException; the text keeps minescan's one line.
    items = [{"image": np.zeros((64, 64, 4), np.uint8)}]
    ds = ray.data.from_items(items).map_batches(DetectTiles, fn_constructor_kwargs={"model": str(DEMO)},
                                                compute=ActorPoolStrategy(size=1), batch_format="numpy")
    with pytest.raises(ray.exceptions.UserCodeException) as caught:
        ds.take_all()
    assert ("minescan.scaleout.ray_data.TileBatchError: column 'image' is uint8 [1, 64, 64, 4] (4 channels); "
            "tiles must be uint8 [N, H, W, 3] RGB") in str(caught.value)


def test_tile_rows_and_read_tiles_give_the_scans_tiles(ray_session, scene):
    path, _, grid_tiles, tiles, expected = scene
    rows = tile_rows(path)
    assert [(r["row"], r["col"], r["col_off"], r["row_off"], r["width"], r["height"]) for r in rows] == [
        (t.row, t.col, t.col_off, t.row_off, t.width, t.height) for t in grid_tiles]
    assert rows[0]["scene"] == str(Path(path).absolute())
    read = ReadTiles(DEMO)
    direct = read({k: np.array([r[k] for r in rows]) for k in rows[0]})
    np.testing.assert_array_equal(direct["image"], tiles)
    assert not direct["empty"].any()

    out = (ray.data.from_items(rows)
           .map_batches(ReadTiles, fn_constructor_kwargs={"model": str(DEMO)}, batch_size=2,
                        compute=ActorPoolStrategy(size=1), batch_format="numpy")
           .map_batches(DetectTiles, fn_constructor_kwargs={"model": str(DEMO)}, batch_size=2,
                        compute=ActorPoolStrategy(size=1), batch_format="numpy"))
    got = sorted(out.take_all(), key=lambda r: (r["row"], r["col"]))
    assert {"scene", "row", "col", "col_off", "row_off", "width", "height", "empty"} <= set(got[0]) and "image" not in got[0]
    _assert_same(got, expected)


def test_without_ray_the_error_says_how_to_install(monkeypatch, scene):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(RayDataError, match=re.escape("pip install 'minescan[ray]'")):
        ray_data.tile_dataset([scene[0]])
