"""Cloud and quality masks: an L2A product's SCL or a mask raster laid over the scene, what they skip, flag and drop.

Scenes are the known-answer square scenes (testkit.square_detector finds every rectangle exactly), written as L2A
products with an SCL layer whose clouds cover chosen objects (the clouds are in the SCL only: the square detector
would take a white cloud for an object).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
from rasterio.transform import from_origin

from minescan import Scanner
from minescan.quality.mask import QualityMask, box_shares, tile_shares
from minescan.quality.scl import CLOUD_HIGH, CLOUD_MEDIUM, THIN_CIRRUS
from minescan.synthetic.clouds import plan_clouds, scl_layer
from minescan.synthetic.products import write_safe
from minescan.synthetic.scene import SceneSpec, write_scene

SPEC = SceneSpec(width=1600, height=1280, objects=24, seed=11, tile=640, overlap=128)


@pytest.fixture(scope="module")
def cloudy_product(tmp_path_factory):
    """An L2A product of SPEC whose SCL puts high clouds over three of its objects, plus four random clouds."""
    from minescan.synthetic.scene import write_scene as _unused  # noqa: F401  (the product writer draws the scene)

    folder = tmp_path_factory.mktemp("cloudy")
    scene_path = folder / "plain.tif"
    truth = write_scene(scene_path, SPEC)
    over = [tuple(float(v) for v in truth.boxes[i]) for i in (0, 5, 9)]
    clouds = plan_clouds(SPEC.width, SPEC.height, seed=3, over=over, count=4)
    scl = scl_layer(clouds, SPEC.width, SPEC.height)
    product, _ = write_safe(folder, SPEC, truth, scl=scl)
    return product, truth, scl, over


@pytest.fixture(scope="module")
def scanner(square_model):
    return Scanner(square_model)


def _boxes(result, keep=None) -> dict[tuple, float]:
    d = result.detections
    keep = np.ones(len(d), bool) if keep is None else keep
    return {tuple(np.round(b, 3)): float(s) for b, s, k in zip(d.boxes, d.scores, keep) if k}


def _touches_skipped(box, plan) -> bool:
    x0, y0, x1, y1 = box
    for tile in plan.grid:
        if (tile.row, tile.col) in plan.skip:
            tx0, ty0 = tile.col_off, tile.row_off
            if x0 < tx0 + tile.valid_width and x1 > tx0 and y0 < ty0 + tile.valid_height and y1 > ty0:
                return True
    return False


def test_the_scl_of_an_l2a_product_masks_clouds_and_flags_what_they_cover(cloudy_product, scanner):
    product, truth, scl, over = cloudy_product
    result = scanner.scan(product)
    quality = result.plan.quality
    assert quality is not None and "SCL" in quality.mask.origin and result.plan.origins["mask"] == "product"
    # The clear share is the SCL's own, area-weighted at 20 m (the scene has no SCL no-data).
    cloudy = np.isin(scl, (3, 8, 9, 10))
    assert result.assessment.clear_share == pytest.approx(1 - cloudy.mean(), abs=1e-9)
    # Each object under a cloud: found (the imagery is clear) but flagged, fully masked.
    shares = dict(zip(map(tuple, np.round(result.detections.boxes, 3)), result.assessment.masked))
    for box in over:
        assert shares[tuple(np.round(box, 3))] == pytest.approx(1.0)
    flagged = result.flagged
    assert flagged.sum() >= len(over) and np.all(result.assessment.masked[flagged] > 0.5)
    assert np.all(result.assessment.masked[~flagged] <= 0.5)


def test_masking_never_changes_a_detection_in_clear_areas(cloudy_product, scanner):
    product, truth, _, _ = cloudy_product
    plain = scanner.scan(product, mask="none")
    assert plain.plan.quality is None and np.isnan(plain.assessment.columns(len(plain.detections))["masked"]).all()
    for skip in (0.9, 0.3):
        masked = scanner.scan(product, skip_masked=skip)
        assert masked.masked_tiles == len(masked.plan.skip)
        clear = masked.plan.quality.mask.box_shares(plain.detections.boxes) == 0
        untouched = np.array([not _touches_skipped(b, masked.plan) for b in plain.detections.boxes], bool)
        expected = _boxes(plain, clear & untouched)
        assert expected, "the scene must keep clear objects"
        got_clear = masked.assessment.masked == 0
        got_untouched = np.array([not _touches_skipped(b, masked.plan) for b in masked.detections.boxes], bool)
        assert _boxes(masked, got_clear & got_untouched) == expected  # same boxes, same scores
    # Skipping more tiles keeps fewer: at 0.3 some tiles go that 0.9 scans.
    assert len(scanner.plan(product, skip_masked=0.3).skip) > len(scanner.plan(product).skip)


def test_drop_removes_exactly_what_flag_marks(cloudy_product, scanner):
    product, _, _, _ = cloudy_product
    flagged = scanner.scan(product, max_masked=0.2)
    dropped = scanner.scan(product, max_masked=0.2, masked="drop")
    assert dropped.assessment.dropped == int(flagged.flagged.sum()) > 0
    assert _boxes(dropped) == _boxes(flagged, ~flagged.flagged)
    assert not dropped.flagged.any()


def test_chosen_scl_classes_mask_only_those(cloudy_product, scanner):
    product, _, scl, _ = cloudy_product
    plan = scanner.plan(product, mask_classes=(CLOUD_HIGH,))
    assert plan.quality.mask.classes == (CLOUD_HIGH,)
    assert plan.quality.mask.clear_share == pytest.approx(1 - (scl == CLOUD_HIGH).mean(), abs=1e-9)
    none = scanner.plan(product, mask_classes=(THIN_CIRRUS, CLOUD_MEDIUM))
    assert none.quality.mask.clear_share == pytest.approx(1 - np.isin(scl, (THIN_CIRRUS, CLOUD_MEDIUM)).mean(), abs=1e-9)


def _mask_file(path, spec: SceneSpec, values: np.ndarray, pixel: float, **extra) -> Path:
    x, y = spec.origin
    with rasterio.open(path, "w", driver="GTiff", width=values.shape[1], height=values.shape[0], count=1,
                       dtype=values.dtype, crs=f"EPSG:{spec.epsg}", transform=from_origin(x, y, pixel, pixel), **extra) as dst:
        dst.write(values, 1)
    return Path(path)


def test_a_mask_raster_gives_exact_shares_and_skips_tiles(tmp_path, scanner):
    spec = SceneSpec(width=1280, height=1280, objects=12, seed=4)
    scene = tmp_path / "scene.tif"
    write_scene(scene, spec)
    values = np.zeros((640, 640), np.uint8)  # 20 m cells
    values[:, 320:] = 7  # the right half masked (any non-zero value)
    values[100:103, 50:53] = 1  # a 3 x 3 cell (60 m) patch
    mask = _mask_file(tmp_path / "mask.tif", spec, values, 20.0)
    plan = scanner.plan(scene, mask=str(mask))
    q = plan.quality.mask
    assert q.factor == 2 and q.masked.shape == (640, 640) and plan.origins["mask"] == "option"
    # Box shares, exact against counting 10 m pixels.
    pixels = np.kron(values != 0, np.ones((2, 2), bool))
    boxes = np.array([[95, 195, 110, 210], [630, 0, 650, 20], [0, 0, 10, 10], [1270, 1270, 1290, 1290]], np.float64)
    for box, share in zip(boxes, box_shares(q, boxes)):
        x0, y0, x1, y1 = box.astype(int)
        inside = pixels[y0:min(y1, 1280), x0:min(x1, 1280)]
        outside = (x1 - x0) * (y1 - y0) - inside.size  # past the scene's edge: counts as masked
        assert share == pytest.approx((inside.sum() + outside) / ((x1 - x0) * (y1 - y0)))
    # Tiles: those at least 90 % masked are not scanned (here the right column of tiles).
    shares = tile_shares(q, plan.grid)
    assert plan.skip == {place for place, share in shares.items() if share >= 0.9} and plan.skip
    result = scanner.scan(plan)
    assert result.masked_tiles == len(plan.skip) and result.skipped == 0


def test_what_the_mask_does_not_cover_counts_as_masked(tmp_path, scanner):
    spec = SceneSpec(width=800, height=800, objects=4, seed=2)
    scene = tmp_path / "scene.tif"
    write_scene(scene, spec)
    small = _mask_file(tmp_path / "half.tif", spec, np.zeros((800, 400), np.uint8), 10.0)  # covers the left half
    plan = scanner.plan(scene, mask=str(small))
    assert plan.quality.mask.clear_share == pytest.approx(0.5) and "covers 50%" in plan.quality.mask.origin
    nodata = _mask_file(tmp_path / "nodata.tif", spec, np.full((800, 800), 255, np.uint8), 10.0, nodata=255)
    assert scanner.plan(scene, mask=str(nodata)).quality.mask.clear_share == 0.0


def test_clouds_do_not_set_the_stretch(tmp_path, scanner):
    """A bright cloud over a third of the scene would darken the whole stretch; masked, it is left out of the statistics."""
    spec = SceneSpec(width=1200, height=1200, objects=6, seed=8)
    clear_path, cloudy_path = tmp_path / "clear.tif", tmp_path / "cloudy.tif"
    write_scene(clear_path, spec)
    with rasterio.open(clear_path) as src:
        profile, data = src.profile, src.read()
    data[:, :, :400] = 5500  # a white cloud over the left third
    with rasterio.open(cloudy_path, "w", **profile) as dst:
        dst.write(data)
    values = np.zeros((600, 600), np.uint8)
    values[:, :200] = 1
    mask = _mask_file(tmp_path / "cloud.tif", spec, values, 20.0)
    clear = scanner.plan(clear_path, stretch=(2, 98), bands=(3, 2, 1)).radiometry.high
    fooled = scanner.plan(cloudy_path, stretch=(2, 98), bands=(3, 2, 1)).radiometry.high
    masked = scanner.plan(cloudy_path, stretch=(2, 98), bands=(3, 2, 1), mask=str(mask)).radiometry.high
    assert np.all(np.asarray(fooled) > 1.5 * np.asarray(clear))
    assert np.allclose(masked, clear, rtol=0.1)


def test_results_carry_shares_flags_and_the_unobserved_areas(cloudy_product, scanner, tmp_path):
    product, _, _, _ = cloudy_product
    result = scanner.scan(product, skip_masked=0.3)
    gpkg, geojson = result.write(tmp_path / "r.gpkg"), result.write(tmp_path / "r.geojson")
    layers = [name for name, _ in pyogrio.list_layers(gpkg)]
    assert layers == [result.scene, "unobserved"]
    meta, _, _, fields = pyogrio.raw.read(str(gpkg), layer=0)
    column = dict(zip(meta["fields"], fields))
    assert list(meta["fields"][-4:]) == ["masked", "flagged", "concession", "inside"]
    assert np.array_equal(column["flagged"], result.flagged.astype(np.int32))
    assert np.allclose(column["masked"], result.assessment.masked)
    info = json.loads(pyogrio.read_info(gpkg, layer=0)["layer_metadata"]["minescan"])
    assert info["date"] == "2023-01-01" and info["quality"]["skipped_tiles"] == result.masked_tiles > 0
    assert info["footprint"].startswith("POLYGON ((300000 ")  # the raster's extent, scene CRS
    _, _, _, reasons = pyogrio.raw.read(str(gpkg), layer="unobserved")
    assert {"masked", "not scanned"} <= set(reasons[0])
    # GeoJSON: the areas beside it, the footprint in WGS84 like its features.
    assert (tmp_path / "r.unobserved.gpkg").is_file()
    collection = json.loads(Path(geojson).read_text())
    assert collection["minescan"]["footprint"].startswith("POLYGON ((12.45")
    assert {f["properties"]["flagged"] for f in collection["features"]} == {0, 1}


def test_a_scan_without_a_mask_still_marks_its_nodata(make_scene, scanner, tmp_path):
    path, _ = make_scene("swath.tif", width=1400, height=1000, objects=6, nodata_width=300)
    result = scanner.scan(path)
    polygons, reasons = result.unobserved()
    assert set(reasons) == {"nodata"}
    import shapely

    area = shapely.area(shapely.union_all(polygons)) / 100  # px
    with rasterio.open(path) as src:
        truth = (src.read(1) == 0).sum()
    assert area == pytest.approx(truth, rel=0.1)  # 16 px cells along a diagonal edge


@pytest.mark.parametrize("args, message", [
    (["--mask", "scl"], "--mask 'scl': the input has no SCL layer"),
    (["--mask", "missing.tif"], "mask missing.tif: not a readable raster"),
    (["--skip-masked", "0"], "--skip-masked 0.0 is out of range: must be in (0, 1]"),
    (["--max-masked", "1.5"], "--max-masked 1.5 is out of range: must be in [0, 1]"),
    (["--mask-classes", "3,12"], "--mask-classes 12"),
    (["--concession-field", "id"], "--concession-field 'id' is out of range: names a field of the concessions layer"),
])
def test_bad_mask_options_are_one_line(make_scene, square_model, tmp_path, args, message):
    path, _ = make_scene("s.tif", width=700, height=700, objects=2)
    out = tmp_path / "o.gpkg"
    done = subprocess.run([sys.executable, "-m", "minescan", "scan", str(path), "--model", str(square_model), "--out", str(out),
                           *args], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode != 0 and not out.exists()
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr


def test_a_stac_item_with_an_scl_asset_is_masked_by_it(tmp_path, scanner):
    from minescan.synthetic.products import write_band_files, write_stac_item

    spec = SceneSpec(width=900, height=700, objects=6, seed=6)
    bands, truth = write_band_files(tmp_path / "bands", spec)
    clouds = plan_clouds(spec.width, spec.height, seed=1, over=[tuple(map(float, truth.boxes[0]))])
    scl = scl_layer(clouds, spec.width, spec.height)
    x, y = spec.origin
    with rasterio.open(tmp_path / "bands" / "SCL_20m.tif", "w", driver="GTiff", width=scl.shape[1], height=scl.shape[0],
                       count=1, dtype="uint8", crs=f"EPSG:{spec.epsg}", transform=from_origin(x, y, 20, 20)) as dst:
        dst.write(scl, 1)
    item = write_stac_item(tmp_path / "item.json", bands, item_id="S2B_T33UUP_20230101_0_L2A")
    data = json.loads(item.read_text())
    data["assets"]["scl"] = {"href": "bands/SCL_20m.tif", "type": "image/tiff; application=geotiff", "roles": ["data"]}
    item.write_text(json.dumps(data))
    result = scanner.scan(item)
    assert result.plan.quality is not None and "SCL_20m.tif" in result.plan.quality.mask.origin
    box = tuple(np.round(truth.boxes[0].astype(float), 3))
    assert dict(zip(map(tuple, np.round(result.detections.boxes, 3)), result.assessment.masked))[box] == 1.0


def test_a_mask_in_another_crs_is_warped_onto_the_scene(tmp_path, scanner):
    from rasterio.warp import calculate_default_transform, reproject

    spec = SceneSpec(width=1000, height=1000, objects=4, seed=9)
    scene = tmp_path / "scene.tif"
    write_scene(scene, spec)
    values = np.zeros((500, 500), np.uint8)
    values[100:300, 150:400] = 1  # 20 % of the scene
    aligned = _mask_file(tmp_path / "utm.tif", spec, values, 20.0)
    with rasterio.open(aligned) as src:
        transform, width, height = calculate_default_transform(src.crs, "EPSG:4326", src.width, src.height, *src.bounds)
        warped = np.zeros((height, width), np.uint8)
        reproject(rasterio.band(src, 1), warped, dst_transform=transform, dst_crs="EPSG:4326", resampling=rasterio.enums.Resampling.nearest)
    with rasterio.open(tmp_path / "wgs84.tif", "w", driver="GTiff", width=width, height=height, count=1, dtype="uint8",
                       crs="EPSG:4326", transform=transform, nodata=None) as dst:
        dst.write(warped, 1)
    direct = scanner.plan(scene, mask=str(aligned)).quality.mask
    via = scanner.plan(scene, mask=str(tmp_path / "wgs84.tif")).quality.mask
    assert direct.clear_share == pytest.approx(0.8)
    # Warped twice (there and back) by nearest neighbour: the edges move by a cell at most.
    assert via.clear_share == pytest.approx(0.8, abs=0.02)
    assert (direct.masked != via.masked).mean() < 0.02
