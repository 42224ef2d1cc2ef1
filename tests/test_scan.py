"""End-to-end scans of generated scenes through the command line's entry point."""

import numpy as np
import pyogrio.raw
import pytest
import rasterio
import shapely
from pyproj import Transformer
from rasterio.transform import from_origin

from minescan.cli import main
from minescan.results.evaluation import compare, iou_matrix
from minescan.synthetic.scene import Truth


def scan(scene, model, out, *extra):
    return main(["scan", str(scene), "--model", str(model), "--out", str(out), *extra])


def read_result(path):
    """(pixel boxes, classes, labels, geometries, crs) of a result file."""
    meta, _, geometry, fields = pyogrio.raw.read(str(path))
    names = list(meta["fields"])
    boxes = np.stack([fields[names.index(k)] for k in ("col_min", "row_min", "col_max", "row_max")], axis=1)
    classes = fields[names.index("class_id")]
    labels = fields[names.index("class_label")]
    return boxes.reshape(-1, 4), classes, labels, shapely.from_wkb(geometry), meta["crs"]


# Tiles of 640 with overlap 128 start at 0, 512, 1024...: borders at x or y = 512..640 and 1024..1152.
BORDER_OBJECTS = [
    (600, 200, 630, 230),  # across the vertical border band of tiles 0 and 1
    (300, 620, 330, 660),  # across a horizontal border
    (1120, 1140, 1150, 1170),  # across a four-tile corner
    (200, 200, 230, 230),  # well inside one tile
]


@pytest.mark.parametrize("suffix", [".geojson", ".gpkg"])
def test_objects_across_borders_and_corners_are_reported_once(make_scene, square_model, tmp_path, suffix):
    scene, truth = make_scene(width=1700, height=1500, truth=Truth.of(BORDER_OBJECTS, [1, 2, 1, 2]))
    out = tmp_path / f"result{suffix}"
    assert scan(scene, square_model, out, "--bands", "3,2,1") == 0
    boxes, classes, labels, _, _ = read_result(out)
    assert len(boxes) == len(BORDER_OBJECTS)
    ious = iou_matrix(boxes, truth.boxes)
    assert (ious.max(axis=0) >= 0.9).all() and ((ious >= 0.5).sum(axis=0) == 1).all()
    best = ious.argmax(axis=0)
    assert classes[best].tolist() == [1, 2, 1, 2]
    assert labels[best].tolist() == ["red_square", "blue_square", "red_square", "blue_square"]


@pytest.mark.parametrize("epsg,origin", [(32633, (300000.0, 5000040.0)), (32733, (700000.0, 7000020.0))])
def test_georeferencing_is_exact_in_gpkg_and_geojson(make_scene, square_model, tmp_path, epsg, origin):
    scene, truth = make_scene(width=900, height=800, epsg=epsg, origin=origin, truth=Truth.of([(101, 203, 131, 223), (600, 550, 640, 590)]))
    gpkg, geojson = tmp_path / "r.gpkg", tmp_path / "r.geojson"
    assert scan(scene, square_model, gpkg, "--bands", "3,2,1") == 0
    assert scan(scene, square_model, geojson, "--bands", "3,2,1") == 0

    boxes, _, _, polygons, crs = read_result(gpkg)
    assert crs == f"EPSG:{epsg}"
    order = np.argsort(boxes[:, 0])
    x0, y0 = origin
    expected = [(x0 + 10 * a, y0 - 10 * d, x0 + 10 * c, y0 - 10 * b) for a, b, c, d in truth.boxes]
    np.testing.assert_allclose(shapely.bounds(polygons[order]), expected, atol=1e-3)  # 1 mm

    boxes, _, _, polygons, crs = read_result(geojson)
    assert crs == "EPSG:4326"
    order = np.argsort(boxes[:, 0])
    to_lonlat = Transformer.from_crs(f"EPSG:{epsg}", "EPSG:4326", always_xy=True)
    for polygon, (left, bottom, right, top) in zip(polygons[order], expected):
        ring = np.asarray(polygon.exterior.coords)[:4]
        corners = np.column_stack(to_lonlat.transform([left, left, right, right], [top, bottom, bottom, top]))
        assert all(np.abs(ring - c).sum(axis=1).min() < 1e-8 for c in corners)
        assert polygon.exterior.is_ccw  # RFC 7946 right-hand rule
        if epsg == 32733:
            assert ring[:, 1].max() < 0  # southern hemisphere latitudes


def test_all_nodata_tiles_are_skipped(tmp_path, square_model, capsys):
    path = tmp_path / "half_empty.tif"
    data = np.full((3, 1300, 1800), 600, np.uint16)
    data[:, :, :1000] = 0  # nodata: tiles of 256/32 starting at x = 0, 224, 448, 672 lie wholly inside
    data[:, 100:130, 1200:1240] = 3500
    profile = dict(driver="GTiff", width=1800, height=1300, count=3, dtype="uint16", nodata=0, crs="EPSG:32633", transform=from_origin(0, 0, 10, 10))
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    out = tmp_path / "r.gpkg"
    assert scan(path, square_model, out, "--tile", "256", "--overlap", "32") == 0
    rows = 6  # row starts 0, 224, 448, 672, 896, 1044; 8 columns
    assert f"48 tiles ({4 * rows} skipped as nodata), 1 detections" in capsys.readouterr().out
    assert read_result(out)[0].tolist() == [[1200, 100, 1240, 130]]


def test_default_bands_come_from_band_descriptions(make_scene, square_model, tmp_path):
    scene, truth = make_scene(width=700, height=700, truth=Truth.of([(100, 100, 130, 130), (300, 300, 330, 330)], [1, 2]))
    out = tmp_path / "r.gpkg"
    assert scan(scene, square_model, out) == 0  # B02,B03,B04,B08 descriptions -> RGB = 3,2,1
    boxes, classes, *_ = read_result(out)
    assert classes[np.argsort(boxes[:, 0])].tolist() == [1, 2]
    assert scan(scene, square_model, out, "--bands", "1,2,3") == 0  # blue as red swaps the classes
    boxes, classes, *_ = read_result(out)
    assert classes[np.argsort(boxes[:, 0])].tolist() == [2, 1]


def test_uint8_rgb_scene_is_used_as_is(tmp_path, square_model):
    path = tmp_path / "rgb.tif"
    data = np.full((3, 500, 600), 40, np.uint8)
    data[:, 50:80, 400:450] = np.array([230, 180, 90], np.uint8)[:, None, None]
    with rasterio.open(path, "w", driver="GTiff", width=600, height=500, count=3, dtype="uint8", crs="EPSG:32633",
                       transform=from_origin(0, 0, 10, 10), photometric="RGB") as dst:
        dst.write(data)
    out = tmp_path / "r.geojson"
    assert scan(path, square_model, out) == 0
    boxes, classes, *_ = read_result(out)
    assert boxes.tolist() == [[400, 50, 450, 80]] and classes.tolist() == [1]


@pytest.mark.parametrize("model_fixture", ["square_model", "od_api_like_model"])
def test_sentinel2_like_scene_with_150_objects(make_scene, tmp_path, request, capsys, model_fixture):
    model = request.getfixturevalue(model_fixture)
    scene, truth = make_scene(width=5000, height=4000, objects=150, seed=11, nodata_width=700)
    assert len(truth.boxes) == 150
    out = tmp_path / "r.gpkg"
    assert scan(scene, model, out, "--bands", "3,2,1", "--batch", "8") == 0
    boxes, classes, *_ = read_result(out)
    agreement = compare(boxes, np.ones(len(boxes)), classes, truth.boxes, truth.classes)
    assert (agreement.matched, agreement.detections, agreement.duplicates) == (150, 150, 0)
    assert agreement.mean_iou >= 0.99
    assert "80 tiles" in capsys.readouterr().out
