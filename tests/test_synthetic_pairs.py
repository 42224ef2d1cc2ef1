"""Test data of issue 19: clouds and their SCL, .SAFE products with an SCL, two-date pairs, concessions."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pyogrio.raw
import pytest
import rasterio
import shapely
from affine import Affine

from minescan.quality import scl as SCL
from minescan.results.georef import box_polygons
from minescan.synthetic.clouds import Cloud, Clouds, apply_clouds, cloud_masks, plan_clouds, scl_layer
from minescan.synthetic.concessions import concession_polygons, many_concessions, write_concessions
from minescan.synthetic.mining import MiningSpec, plan_scene, render_strip, scl_classes, write_layout
from minescan.synthetic.pairs import PairSpec, plan_pair, plan_square_pair, write_pair
from minescan.synthetic.scene import SceneSpec, Truth
from testkit.products import ProductSpec, write_safe, write_safe_from_raster

# GDAL warns "no geotransform" on opening a product's MTD_MSIL2A.xml itself (its subdatasets carry the georeferencing)
pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")

CLOUDY = (SCL.CLOUD_MEDIUM, SCL.CLOUD_HIGH, SCL.THIN_CIRRUS)
NOT_CLEAR = (SCL.CLOUD_SHADOW, *CLOUDY)


def cells(box, factor: int = 2):
    """The SCL cells (row slice, col slice) touching a pixel box."""
    x0, y0, x1, y1 = box
    return np.s_[y0 // factor : -(-y1 // factor), x0 // factor : -(-x1 // factor)]


def around(box, pad: int = 1, factor: int = 2):
    """The SCL cells touching a box, plus ``pad`` cells around it."""
    rows, cols = cells(box, factor)
    return np.s_[max(0, rows.start - pad) : rows.stop + pad, max(0, cols.start - pad) : cols.stop + pad]


# --- clouds and the SCL ---------------------------------------------------------------------------


BOXES = [(11, 13, 47, 40), (300, 201, 301, 202), (500, 77, 617, 163), (0, 380, 25, 400)]


def test_clouds_cover_the_boxes_they_are_asked_to_at_10_and_20_m():
    clouds = plan_clouds(640, 400, seed=3, over=BOXES)
    assert len(clouds) == len(BOXES) and all(c.kind == "high" for c in clouds)
    scl = scl_layer(clouds)
    assert scl.shape == (200, 320) and scl.dtype == np.uint8
    pixels, _ = cloud_masks(clouds, np.arange(400) + 0.5, np.arange(640) + 0.5)
    for x0, y0, x1, y1 in BOXES:
        assert (scl[cells((x0, y0, x1, y1))] == SCL.CLOUD_HIGH).all()
        assert pixels["high"][y0:y1, x0:x1].all()
    assert set(np.unique(scl)) <= {SCL.VEGETATION, SCL.CLOUD_SHADOW, SCL.CLOUD_HIGH}
    assert (scl == SCL.VEGETATION).mean() > 0.5  # the clouds are where they were asked to be, not everywhere


def test_scl_rule_kinds_shadows_base_and_nodata():
    cloud = Cloud(100, 100, 30, "medium", shadow=(80.0, 0.0))
    scl = scl_layer(Clouds((cloud, Cloud(20, 180, 10, "cirrus", shadow=(30.0, 0.0))), 301, 201))
    assert scl.shape == (101, 151)
    # a cell is cloud when its centre (2c + 1, 2r + 1) is inside: the centre (129, 101) is, (131, 101) is not
    assert scl[50, 50] == SCL.CLOUD_MEDIUM and scl[50, 64] == SCL.CLOUD_MEDIUM and scl[50, 65] == SCL.VEGETATION
    assert scl[50, 80] == SCL.CLOUD_SHADOW and scl[50, 110] == SCL.VEGETATION  # the shadow: 150 < x < 210
    assert scl[90, 10] == SCL.THIN_CIRRUS and scl[90, 25] == SCL.VEGETATION  # cirrus casts no shadow
    base = np.full((101, 151), SCL.WATER, np.uint8)
    nodata = np.zeros((201, 301), bool)
    nodata[:, :7] = True  # cells 0-2 are all nodata, cell 3 (px 6-7) only half
    layered = scl_layer(Clouds((cloud,), 301, 201), base=base, nodata=nodata)
    assert (layered[:, :3] == SCL.NO_DATA).all() and (layered[:, 3] == SCL.WATER).all()
    assert layered[50, 50] == SCL.CLOUD_MEDIUM and layered[0, 140] == SCL.WATER


def test_a_high_cloud_hides_the_ground_and_other_pixels_are_untouched():
    spec = MiningSpec(width=256, height=256, seed=4, illegal_density=30, legal_density=0, distractor_density=0)
    layout = plan_scene(spec)
    site = layout.sites[0]
    clouds = plan_clouds(256, 256, seed=1, over=[site.box])
    plain = np.concatenate([render_strip(layout, t, 64) for t in range(0, 256, 64)])
    cloudy = apply_clouds(plain, clouds, 0)
    x0, y0, x1, y1 = site.box
    under = cloudy[y0:y1, x0:x1].astype(float) / 10000
    assert under.min() >= 0.45 and under.max() <= 0.6  # white in all bands: no site pixel shows
    assert plain[y0:y1, x0:x1, 2].max() < 3000
    kinds, shadow = cloud_masks(clouds, np.arange(256) + 0.5, np.arange(256) + 0.5)
    touched = kinds["high"] | kinds["medium"] | kinds["cirrus"] | shadow
    assert shadow.any() and (cloudy[~touched] == plain[~touched]).all()
    shaded = shadow & ~(kinds["high"] | kinds["medium"] | kinds["cirrus"])
    assert shaded.any() and (cloudy[shaded] <= plain[shaded]).all()
    # strips clouded one by one (``top``) give the same picture as the whole
    assert (np.concatenate([apply_clouds(plain[t : t + 64], clouds, t) for t in range(0, 256, 64)]) == cloudy).all()


def test_write_layout_with_clouds_changes_only_cloudy_pixels(tmp_path):
    spec = MiningSpec(width=300, height=260, seed=2, strip=100)
    layout = plan_scene(spec)
    clouds = plan_clouds(300, 260, seed=5, count=2, radius=(20, 40))
    write_layout(tmp_path / "plain.tif", layout)
    write_layout(tmp_path / "cloudy.tif", layout, clouds=clouds)
    with rasterio.open(tmp_path / "plain.tif") as a, rasterio.open(tmp_path / "cloudy.tif") as b:
        plain, cloudy = a.read(), b.read()
    kinds, shadow = cloud_masks(clouds, np.arange(260) + 0.5, np.arange(300) + 0.5)
    touched = kinds["high"] | kinds["medium"] | kinds["cirrus"] | shadow
    assert touched.any() and (plain[:, ~touched] == cloudy[:, ~touched]).all() and (plain[:, touched] != cloudy[:, touched]).any()
    strips = np.concatenate([render_strip(layout, t, min(100, 260 - t)) for t in range(0, 260, 100)])
    np.testing.assert_array_equal(plain, np.moveaxis(strips, -1, 0))


# --- .SAFE products with an SCL ------------------------------------------------------------------------


def _scl_files(root):
    return list(root.glob("GRANULE/*/IMG_DATA/R20m/*_SCL_20m.jp2"))


def test_write_safe_adds_an_scl_at_20_m_and_the_product_still_opens(tmp_path, square_model):
    from minescan import Scanner

    spec = SceneSpec(width=301, height=260, objects=0, seed=5)
    truth = Truth.of([(40, 40, 70, 65), (200, 150, 240, 180)], [1, 2])
    clouds = plan_clouds(301, 260, seed=0, over=[(200, 150, 240, 180)])
    scl = scl_layer(clouds)
    (tmp_path / "plain").mkdir()
    (tmp_path / "scl").mkdir()
    plain, _ = write_safe(tmp_path / "plain", spec, truth)
    root, _ = write_safe(tmp_path / "scl", spec, truth, scl=scl)
    assert not _scl_files(plain) and "SCL" not in (plain / "MTD_MSIL2A.xml").read_text()
    [scl_file] = _scl_files(root)
    image = f"GRANULE/{scl_file.parent.parent.parent.name}/IMG_DATA/R20m/{scl_file.stem}"
    assert f"<IMAGE_FILE>{image}</IMAGE_FILE>" in (root / "MTD_MSIL2A.xml").read_text()
    with rasterio.open(scl_file) as src:
        assert src.transform == Affine(20, 0, 300000, 0, -20, 5000040) and src.crs == "EPSG:32633"
        assert src.dtypes[0] == "uint8" and (src.read(1) == scl).all()
    for product in (plain, root):
        with rasterio.open(product / "MTD_MSIL2A.xml") as mtd:
            ten = [s for s in mtd.subdatasets if ":10m:" in s]
        with rasterio.open(ten[0]) as src:
            assert src.count == 6 and src.shape == (260, 301) and src.transform.a == 10
    found = Scanner(square_model).scan(root).detections
    assert sorted(map(tuple, found.boxes.tolist())) == [(40, 40, 70, 65), (200, 150, 240, 180)]
    with pytest.raises(ValueError, match="uint8 130 x 151"):
        write_safe(tmp_path / "scl", spec, truth, product=ProductSpec(sensing="20230102T100000"), scl=scl[:-1])


def test_write_safe_from_raster_adds_the_scl(tmp_path):
    spec = MiningSpec(width=200, height=150, seed=1)
    layout = plan_scene(spec)
    write_layout(tmp_path / "scene.tif", layout)
    scl = scl_layer(plan_clouds(200, 150, seed=2, count=1, radius=(20, 30)), base=scl_classes(layout))
    assert set(np.unique(scl_classes(layout))) <= {SCL.VEGETATION, SCL.NOT_VEGETATED, SCL.WATER}
    root = write_safe_from_raster(tmp_path, tmp_path / "scene.tif", scl=scl)
    [scl_file] = _scl_files(root)
    with rasterio.open(scl_file) as src:
        assert src.transform == spec.transform * Affine.scale(2) and src.crs == spec.crs and (src.read(1) == scl).all()
    assert f"{scl_file.stem}</IMAGE_FILE>" in (root / "MTD_MSIL2A.xml").read_text()


# --- mining pairs --------------------------------------------------------------------------------------------


def _area(box):
    return (box[2] - box[0]) * (box[3] - box[1])


def test_a_mining_pair_has_exactly_the_asked_changes():
    spec = PairSpec(new=3, grown=2, vanished=2, clouded=1, clouded_before=1, random_clouds=2)
    pair = plan_pair(spec)
    assert pair.expected == plan_pair(spec).expected and pair.clouds_after == plan_pair(spec).clouds_after
    labels = Counter(e.label for e in pair.expected)
    assert labels == {"new": 3, "grown": 2, "gone": 2, "unknown": 2, "unchanged": labels["unchanged"]} and labels["unchanged"] > 0
    before = {s.box: s for s in pair.before.sites if s.class_id}
    after = {s.box: s for s in pair.after.sites if s.class_id}
    assert len(pair.expected) == len(set(before) | set(after)) - 2  # a grown site's two boxes are one change
    # same ground, only sites differ
    for name in ("fields", "forest", "lakes", "variation"):
        assert (getattr(pair.before, name) == getattr(pair.after, name)).all()
    assert pair.before.rivers == pair.after.rivers and pair.before.roads == pair.after.roads
    scl_before = scl_layer(pair.clouds_before, base=scl_classes(pair.before))
    scl_after = scl_layer(pair.clouds_after, base=scl_classes(pair.after))
    for e in pair.expected:
        b, a = e.before_box, e.after_box
        if e.label == "new":
            assert b is None and a in after and not any(_overlaps(a, x) for x in before)
        elif e.label == "gone":
            assert a is None and b in before and not any(_overlaps(b, x) for x in after)
        elif e.label == "grown":
            assert b in before and a in after and _area(a) >= 2 * _area(b) and _overlaps(a, b)
        elif e.label == "unchanged":
            assert a == b and a in before and a in after and (before[a].materials == after[a].materials).all()
        else:  # unknown: under a high cloud at one date, clear at the other
            assert a is not None and a in after
            if b is None:
                assert (scl_before[cells(a)] == SCL.CLOUD_HIGH).all()
            else:
                assert b == a and (scl_after[cells(a)] == SCL.CLOUD_HIGH).all()
        for box, scl, hidden in ((b, scl_before, e.label == "unknown" and b is None), (a, scl_after, e.label == "unknown" and b is not None)):
            if box is not None and not hidden:  # a site seen at a date is entirely clear of cloud and shadow there
                assert not np.isin(scl[around(box)], NOT_CLEAR).any(), (e, box)
    new_classes = [e.class_id for e in pair.expected if e.label == "new"]
    assert new_classes.count(1) >= 2 and set(new_classes) <= {1, 2}


def _overlaps(a, b):
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_a_pair_that_cannot_be_made_says_why():
    with pytest.raises(ValueError, match="vanished .* mining sites"):
        plan_pair(PairSpec(base=MiningSpec(width=256, height=256), vanished=5))


def test_written_mining_pair_hides_the_clouded_sites_in_the_imagery(tmp_path):
    spec = PairSpec(base=MiningSpec(width=640, height=640, seed=3, illegal_density=12.0, legal_density=4.0),
                    new=2, grown=1, vanished=1, clouded=1, clouded_before=1, random_clouds=1)
    files = write_pair(tmp_path, spec)
    assert files.before.name != files.after.name and "20261127" in files.before.name and "20261204" in files.after.name
    expected = json.loads(files.expected.read_text())["changes"]
    assert Counter(e["label"] for e in expected) == Counter(e.label for e in plan_pair(spec).expected)
    [clouded] = [e for e in expected if e["label"] == "unknown" and e["before_box"]]
    x0, y0, x1, y1 = clouded["after_box"]
    for root, bright in ((files.before, False), (files.after, True)):
        with rasterio.open(next(root.rglob("*_B04_10m.jp2"))) as src:
            red = src.read(1)[y0:y1, x0:x1].astype(int) - 1000  # the product's offset
        assert bool(red.min() >= 4500) == bright and bool(red.max() < 3000) != bright
        [scl_file] = _scl_files(root)
        with rasterio.open(scl_file) as src:
            assert bool((src.read(1)[cells((x0, y0, x1, y1))] == SCL.CLOUD_HIGH).all()) == bright
    for name in ("truth_before", "truth_after"):
        _, _, geometry, _ = pyogrio.raw.read(getattr(files, name))
        assert len(geometry) == sum(1 for e in expected if e[f"{name[6:]}_box"])
    _, _, geometry, fields = pyogrio.raw.read(tmp_path / "expected.gpkg")
    assert list(fields[0]) == [e["label"] for e in expected]
    meta, _, geometry, fields = pyogrio.raw.read(files.cadastre)
    assert meta["fields"].tolist() == ["licence_id", "holder", "status"] and meta["crs"] == "EPSG:32630"


# --- square pairs, end to end with the square detector ---------------------------------------------------------


def test_square_pair_products_scan_to_their_truths(tmp_path, square_model):
    from minescan import Scanner

    pair = plan_square_pair(SceneSpec(width=900, height=700, objects=10, seed=7, nodata_width=80, tile=256, overlap=64))
    labels = Counter(e.label for e in pair.expected)
    assert labels["new"] == 3 and labels["grown"] == 2 and labels["gone"] == 2 and labels["unknown"] == 2
    files = write_pair(tmp_path, pair, concessions_crs="EPSG:4326")
    scanner = Scanner(square_model)
    for root, truth, clouds in ((files.before, pair.before, pair.clouds_before), (files.after, pair.after, pair.clouds_after)):
        found = sorted(map(tuple, np.rint(scanner.scan(root).detections.boxes).astype(int).tolist()))
        wanted = sorted(map(tuple, truth.boxes.astype(int).tolist()))
        # the imagery is not clouded (the detector would see clouds): at most a masking scan leaves out clouded ones
        clear = [b for b in wanted if not clouds.touches(b)]
        assert set(clear) <= set(found) <= set(wanted), (found, wanted)
        [scl_file] = _scl_files(root)
        with rasterio.open(scl_file) as src:
            scl = src.read(1)
        # the swath edge (cols < 80 - rows / 4 are nodata): cells wholly in it are 0
        assert (scl[0, :39] == SCL.NO_DATA).all() and (scl[0, 40:] != SCL.NO_DATA).all() and (scl[-1] != SCL.NO_DATA).all()
    for e in pair.expected:
        if e.label == "unknown":
            clouds = pair.clouds_before if e.before_box is None else pair.clouds_after
            assert (scl_layer(clouds)[cells(e.after_box)] == SCL.CLOUD_HIGH).all()
        if e.label == "grown":
            assert _area(e.after_box) >= 2 * _area(e.before_box)
    meta, _, geometry, fields = pyogrio.raw.read(files.cadastre)
    assert meta["crs"] == "EPSG:4326"


# --- concessions ---------------------------------------------------------------------------------------------------


def test_concessions_cover_legal_sites_and_touch_no_illegal_one(tmp_path):
    pair = plan_pair(PairSpec())
    spec = pair.before.spec
    concessions = concession_polygons((pair.before, pair.after), seed=4, extra=40, partial=True)
    polygons = [c.polygon for c in concessions]
    legal = [s.box for layout in (pair.before, pair.after) for s in layout.sites if s.class_id == 2]
    illegal = [s.box for layout in (pair.before, pair.after) for s in layout.sites if s.class_id == 1]
    assert legal and illegal
    for box in legal:
        [square] = box_polygons(np.array([box]), spec.transform)
        assert any(p.contains(square) for p in polygons), box
    [half] = [c for c in concessions if c.partial is not None]
    for box in illegal:
        [square] = box_polygons(np.array([box]), spec.transform)
        shares = [p.intersection(square).area / square.area for p in polygons]
        if tuple(map(float, box)) == half.partial:
            assert sum(shares) == pytest.approx(0.5)
        else:
            assert not any(p.intersects(square) for p in polygons), box
    assert len(concessions) == len({c.licence_id for c in concessions}) and concessions[0].licence_id == "ML-2023-0001"
    assert sum(1 for c in concessions if not c.covers and c.partial is None) == 40
    # written in another CRS, read back in it, the same shapes
    for name in ("cadastre.gpkg", "cadastre.geojson", "cadastre.shp"):
        path = write_concessions(tmp_path / name, concessions, spec.crs, to_crs="EPSG:4326")
        meta, _, geometry, fields = pyogrio.raw.read(path)
        assert len(geometry) == len(concessions) and fields[0].tolist() == [c.licence_id for c in concessions]
        assert meta["crs"] == "EPSG:4326"
        from pyproj import Transformer
        back = Transformer.from_crs("EPSG:4326", spec.crs, always_xy=True)
        first = shapely.transform(shapely.from_wkb(geometry[0]), lambda xy: np.column_stack(back.transform(xy[:, 0], xy[:, 1])))
        assert first.symmetric_difference(concessions[0].polygon).area < 1e-3 * concessions[0].polygon.area


def test_many_concessions_write_100k_features(tmp_path):
    layer = many_concessions((500000.0, 700000.0, 800000.0, 1000000.0), "EPSG:32630", count=100_000, seed=1)
    assert len(layer) == 100_000
    vertices = shapely.get_num_coordinates(layer.geometries) - 1
    assert vertices.min() >= 5 and vertices.max() <= 12 and shapely.is_valid(layer.geometries).all()
    path = write_concessions(tmp_path / "many.gpkg", layer)
    info = pyogrio.read_info(path)
    assert info["features"] == 100_000 and info["crs"] == "EPSG:32630"
    assert info["fields"].tolist() == ["licence_id", "holder", "status"]
