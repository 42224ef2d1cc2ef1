"""``minescan compare``: exact change labels on hand-made result files of two dates.

Result files follow the layout of issue 19 (notes/design19.md): main layer with the detection fields (plus
masked, flagged, concession, inside), metadata under "minescan" with "footprint" (WKT, the file's CRS) and
"date", unobserved areas in an "unobserved" layer (GeoPackage) or a "<stem>.unobserved.gpkg" sidecar.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import numpy as np
import pyogrio
import pyogrio.raw
import pytest
import shapely
from pyproj import CRS, Transformer
from rasterio.transform import from_origin

from minescan.change import ChangeError, ChangeRule, Coverage, Sites, compare_results, match_sites, read_sites
from minescan.change.compare import FIELDS
from minescan.cli.compare import add_parser
from minescan.cli.options import flag
from minescan.errors import MinescanError, SettingError
from minescan.model.detections import SceneDetections
from minescan.results.georef import box_polygons
from minescan.results.writers import FIELDS as RESULT_FIELDS
from minescan.results.writers import write_detections, write_features

UTM30 = "EPSG:32630"
TRANSFORM = from_origin(600000.0, 800000.0, 10.0, 10.0)  # 10 m pixels; a 1000 x 1000 px scene is 10 km
LABELS = {1: "illegal_mining", 2: "legal_mining"}
OLD_DATE, NEW_DATE = "2026-11-27", "2026-12-04"
SCENE = (0, 0, 1000, 1000)


def _poly(box, transform=TRANSFORM):
    return box_polygons(np.array([box], float), transform)[0]


def _write_result(path, boxes, *, classes=None, scores=None, flagged=None, inside=None, concession=None,
                  footprint=SCENE, date=None, unobserved=(), crs=UTM30, transform=TRANSFORM, polygons=None):
    """A result file as the design lays it out; ``unobserved``: [(pixel box, reason)]; ``polygons`` in ``crs``."""
    n = len(boxes) if polygons is None else len(polygons)
    boxes = np.array(boxes, float).reshape(-1, 4) if polygons is None else np.zeros((n, 4))
    classes = np.array(classes or [1] * n, np.int32)
    fields = dict(zip(RESULT_FIELDS, [
        classes, np.array([LABELS[int(c)] for c in classes], dtype=object),
        np.array(scores or [0.9] * n, np.float64), np.array(["scene.tif"] * n, dtype=object),
        *(boxes[:, i] for i in range(4)),
    ]))
    fields["masked"] = np.zeros(n)
    fields["flagged"] = np.array(flagged or [0] * n, np.int32)
    fields["concession"] = np.array(concession or [None] * n, dtype=object)
    fields["inside"] = np.array(inside if inside is not None else [np.nan] * n, np.float64)
    geometries = box_polygons(boxes, transform) if polygons is None else np.asarray(polygons, dtype=object)
    metadata = {"scene": "scene.tif", "date": date}
    wgs84 = str(path).endswith((".geojson", ".json"))
    if footprint is not None:
        outline = _poly(footprint, transform) if not isinstance(footprint, shapely.Geometry) else footprint
        if wgs84:
            outline = _to(outline, crs, "EPSG:4326")
        metadata["footprint"] = outline.wkt
    write_features(path, geometries, crs, fields, layer="scene", metadata=metadata)
    if unobserved:
        polys = [_poly(b, transform) for b, _ in unobserved]
        target, layer = (path, "unobserved") if str(path).endswith(".gpkg") else (
            path.with_name(path.stem + ".unobserved.gpkg"), "unobserved")
        pyogrio.raw.write(str(target), shapely.to_wkb(np.array(polys, dtype=object)),
                          [np.array([r for _, r in unobserved], dtype=object)], ["reason"], layer=layer,
                          driver="GPKG", geometry_type="Polygon", crs=CRS.from_user_input(crs).to_wkt(),
                          append=str(target) == str(path))
    return path


def _to(geometry, source, target):
    t = Transformer.from_crs(source, target, always_xy=True)
    return shapely.transform(geometry, lambda xy: np.column_stack(t.transform(xy[:, 0], xy[:, 1])))


def _by_first_member(changes, old=None, new=None):
    """The change holding old detection ``old`` (or new detection ``new``)."""
    for c in changes:
        if (old is not None and old in c.old_members) or (new is not None and new in c.new_members):
            return c
    raise AssertionError(f"no change holds old={old} new={new}")


# The two dates of one scene; names say what each site does.
OLD = {
    "unchanged": (100, 100, 150, 150),
    "grown": (300, 100, 340, 140),
    "shrunk": (500, 100, 580, 180),
    "gone": (100, 300, 140, 340),
    "cloud_gone": (500, 300, 540, 340),    # absent at the new date, under its cloud: unknown
    "split": (100, 600, 200, 700),
    "class": (300, 600, 350, 650),
    "flagged": (500, 600, 540, 640),
}
NEW = {
    "unchanged": (102, 101, 152, 151),
    "grown": (295, 95, 355, 155),          # 60 x 60 px against 40 x 40: x 2.25
    "shrunk": (510, 110, 550, 150),        # 40 x 40 inside 80 x 80: / 4
    "new_outside": (300, 300, 340, 340),   # inside 0: an alert
    "new_inside": (300, 800, 320, 820),    # inside 1: a plain new site
    "new_old_cloud": (700, 300, 740, 340), # the old date's cloud hid it: unknown
    "new_outside_old": (920, 500, 960, 540),  # the old scene did not reach it: unknown
    "split_a": (100, 600, 145, 700),
    "split_b": (155, 600, 200, 700),
    "class": (300, 600, 350, 650),
    "flagged": (500, 600, 540, 640),
}
OLD_CLOUD = [((710, 280, 760, 360), "masked")]  # 75% of "new_old_cloud"
NEW_CLOUD = [((510, 280, 600, 400), "masked")]  # 75% of "cloud_gone"


@pytest.fixture
def pair(tmp_path):
    old_classes = [2 if k == "class" else 1 for k in OLD]
    old = _write_result(tmp_path / "old.gpkg", list(OLD.values()), classes=old_classes, date=OLD_DATE,
                        footprint=(0, 0, 900, 1000), unobserved=OLD_CLOUD, inside=[0.0] * len(OLD))
    inside = [1.0 if k == "new_inside" else 0.0 for k in NEW]
    concession = ["C-7" if k == "new_inside" else None for k in NEW]
    flagged = [1 if k == "flagged" else 0 for k in NEW]
    new = _write_result(tmp_path / "new.gpkg", list(NEW.values()), date=NEW_DATE, unobserved=NEW_CLOUD,
                        inside=inside, concession=concession, flagged=flagged)
    return old, new


def _labels(changes):
    old_keys, new_keys = list(OLD), list(NEW)
    out = {}
    for c in changes:
        names = sorted({old_keys[i] for i in c.old_members} | {new_keys[i] for i in c.new_members})
        out["+".join(names)] = c.change
    return out


def test_every_label_exact(pair):
    changes = compare_results([pair[0]], [pair[1]])
    assert _labels(changes.changes) == {
        "unchanged": "unchanged",
        "grown": "grown",
        "shrunk": "shrunk",
        "gone": "gone",
        "cloud_gone": "unknown",
        "new_outside": "new",
        "new_inside": "new",
        "new_old_cloud": "unknown",
        "new_outside_old": "unknown",
        "split+split_a+split_b": "unchanged",
        "class": "unchanged",
        "flagged": "unknown",
    }
    assert changes.counts() == {"new": 2, "gone": 1, "grown": 1, "shrunk": 1, "unchanged": 3, "unknown": 4}


def test_reasons_areas_and_classes(pair):
    changes_set = compare_results([pair[0]], [pair[1]])
    changes = changes_set.changes
    old_keys, new_keys = list(OLD), list(NEW)
    get = lambda key, new=False: _by_first_member(changes, **({"new": new_keys.index(key)} if new else {"old": old_keys.index(key)}))
    assert get("cloud_gone").reason == f"under clouds at {NEW_DATE}"
    assert get("new_old_cloud", new=True).reason == f"under clouds at {OLD_DATE}"
    assert get("new_outside_old", new=True).reason == "outside the old scenes"
    assert get("flagged").reason == f"flagged (mostly masked) at {NEW_DATE}"
    assert get("gone").reason == ""
    grown = get("grown")
    assert grown.old_area_m2 == pytest.approx(40 * 40 * 100) and grown.area_m2 == pytest.approx(60 * 60 * 100)
    assert grown.area_change_m2 == pytest.approx(2000 * 100) and grown.area_change_pct == pytest.approx(125.0)
    shrunk = get("shrunk")
    assert shrunk.area_change_pct == pytest.approx(-75.0)
    gone = get("gone")
    assert gone.area_m2 is None and gone.old_area_m2 == pytest.approx(160000) and gone.area_change_pct is None
    new = get("new_outside", new=True)
    assert new.old_area_m2 is None and new.area_change_m2 is None and new.date == NEW_DATE and new.old_date is None
    split = get("split")
    assert split.new_members == (new_keys.index("split_a"), new_keys.index("split_b"))
    assert split.area_m2 == pytest.approx(2 * 45 * 100 * 100) and split.old_area_m2 == pytest.approx(100 * 100 * 100)
    assert split.geometry.equals(_poly(OLD["split"]))  # the envelope of the group, a Polygon
    cls = get("class")
    assert (cls.class_label, cls.old_class_label) == ("illegal_mining", "legal_mining")
    assert all(changes_set.new.scene[i] == "scene.tif" for i in split.new_members)
    inside = get("new_inside", new=True)
    assert inside.concession == "C-7" and inside.inside == 1.0


def test_alerts_are_new_sites_outside_concessions_first(pair):
    changes = compare_results([pair[0]], [pair[1]])
    alerts = changes.alerts()
    assert [c.new_members for c in alerts] == [(list(NEW).index("new_outside"),)]
    assert changes.changes[0] is alerts[0]
    # inside NaN: no concessions known, so not "outside concessions"
    unknown_concessions = match_sites(Sites.of([]), Sites.of([shapely.box(0, 0, 10, 10)]))
    assert unknown_concessions[0].change == "new" and not unknown_concessions[0].outside_concessions


def test_the_cloud_rule_is_what_decides(pair):
    # The same files with a lenient max_unobserved: the site 75% under the new cloud is now "gone" (the test can fail).
    lenient = compare_results([pair[0]], [pair[1]], ChangeRule(max_unobserved=0.8))
    labels = _labels(lenient.changes)
    assert labels["cloud_gone"] == "gone"
    assert labels["new_old_cloud"] == "new"
    # growth 4 (x 5 or / 5): x 2.25 and / 4 are both unchanged
    strict = _labels(compare_results([pair[0]], [pair[1]], ChangeRule(growth=4.0)).changes)
    assert strict["grown"] == "unchanged" and strict["shrunk"] == "unchanged"


def test_split_and_merge_are_one_site():
    a, b, whole = shapely.box(0, 0, 45, 100), shapely.box(55, 0, 100, 100), shapely.box(0, 0, 100, 100)
    split = match_sites(Sites.of([whole]), Sites.of([a, b]))
    merged = match_sites(Sites.of([a, b]), Sites.of([whole]))
    assert len(split) == len(merged) == 1
    assert split[0].new_members == (0, 1) and merged[0].old_members == (0, 1)
    assert split[0].change == "unchanged" and merged[0].change == "unchanged"  # 9000 vs 10000 m2
    # two boxes that only touch a corner of each other's are two sites
    far = match_sites(Sites.of([shapely.box(0, 0, 10, 10)]), Sites.of([shapely.box(9, 9, 19, 19)]))
    assert sorted(c.change for c in far) == ["gone", "new"]


def test_the_overlap_rule_thresholds():
    old = shapely.box(0, 0, 100, 100)
    # IoU 0.05 and cover 0.1 (a big new box barely over the old one): two sites by default
    shifted = shapely.box(90, 0, 190, 100)
    assert sorted(c.change for c in match_sites(Sites.of([old]), Sites.of([shifted]))) == ["gone", "new"]
    # the same pair with min_iou 0.05 is one site, unchanged in size
    one = match_sites(Sites.of([old]), Sites.of([shifted]), rule=ChangeRule(min_iou=0.05))
    assert [c.change for c in one] == ["unchanged"]
    # cover: a small new box inside the old one is one site (IoU 0.04, cover 1) and it shrank
    inner = shapely.box(10, 10, 30, 30)
    assert [c.change for c in match_sites(Sites.of([old]), Sites.of([inner]))] == ["shrunk"]


def test_coverage_of_a_pure_match():
    site = shapely.box(0, 0, 10, 10)
    cover = Coverage(footprint=shapely.box(-100, -100, 100, 100), unobserved=shapely.box(-5, -5, 6, 20),
                     reasons={"nodata": shapely.box(-5, -5, 6, 20)}, date="2026-12-04")
    gone = match_sites(Sites.of([site]), Sites.of([]), new_cover=cover)
    assert gone[0].change == "unknown" and gone[0].reason == "no data at 2026-12-04"  # 60% hidden
    assert match_sites(Sites.of([site]), Sites.of([]), new_cover=cover, rule=ChangeRule(max_unobserved=0.6))[0].change == "gone"
    # both dates, the region (both dates' union, 11 x 11) 55% hidden at the new date: the size cannot be compared
    both = match_sites(Sites.of([site]), Sites.of([shapely.box(0, 0, 11, 11)]), new_cover=cover)
    assert both[0].change == "unknown" and both[0].area_change_m2 is None


def test_many_sites_match_through_the_index():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 100000, (3000, 2))
    old = shapely.box(xy[:, 0], xy[:, 1], xy[:, 0] + 100, xy[:, 1] + 100)
    new = shapely.box(xy[:, 0] + 5, xy[:, 1], xy[:, 0] + 105, xy[:, 1] + 100)
    changes = match_sites(Sites.of(old), Sites.of(new))
    groups = sum(len(c.old_members) for c in changes)
    assert groups == 3000 and all(c.change == "unchanged" for c in changes if len(c.old_members) == 1 == len(c.new_members))


def _zone_tile(lon0, lat0, lon1, lat1, crs):
    """A lon/lat box as a polygon in ``crs``, and its bounds there."""
    return _to(shapely.box(lon0, lat0, lon1, lat1), "EPSG:4326", crs)


def test_baseline_of_two_tiles_in_two_utm_zones_against_geojson(tmp_path):
    # Old: two tiles either side of 0 deg E (UTM 30N and 31N) with a 0.02 deg overlap; new: one GeoJSON.
    west_fp = _zone_tile(-0.2, 10.0, 0.01, 10.2, "EPSG:32630")
    east_fp = _zone_tile(-0.01, 10.0, 0.2, 10.2, "EPSG:32631")
    site_w = shapely.box(-0.10, 10.10, -0.09, 10.11)   # ~1.1 km, unchanged
    site_e = shapely.box(0.10, 10.10, 0.11, 10.11)     # grows x 4
    site_gone = shapely.box(0.05, 10.05, 0.06, 10.06)
    site_overlap = shapely.box(0.000, 10.15, 0.005, 10.155)  # in both old tiles: one site
    cloud_east = shapely.box(-0.01, 10.14, 0.01, 10.16)  # the east tile could not see the overlap site...
    old_w = _write_result(tmp_path / "west.gpkg", [], polygons=[_to(g, "EPSG:4326", "EPSG:32630") for g in (site_w, site_overlap)],
                          crs="EPSG:32630", footprint=west_fp, date=OLD_DATE)
    old_e = tmp_path / "east.gpkg"
    _write_result(old_e, [], polygons=[_to(g, "EPSG:4326", "EPSG:32631") for g in (site_e, site_gone, site_overlap)],
                  crs="EPSG:32631", footprint=east_fp, date=OLD_DATE)
    pyogrio.raw.write(str(old_e), shapely.to_wkb(np.array([_to(cloud_east, "EPSG:4326", "EPSG:32631")], dtype=object)),
                      [np.array(["masked"], dtype=object)], ["reason"], layer="unobserved", driver="GPKG",
                      geometry_type="Polygon", crs=CRS.from_user_input("EPSG:32631").to_wkt(), append=True)
    grown_e = shapely.box(0.10, 10.10, 0.12, 10.12)
    new_fp = shapely.box(-0.2, 10.0, 0.2, 10.2)
    new = _write_result(tmp_path / "new.geojson", [], polygons=[site_w, grown_e], crs="EPSG:4326", footprint=new_fp,
                        date=NEW_DATE, unobserved=[])
    changes = compare_results([old_w, old_e], [new])
    assert changes.crs.to_epsg() in (32630, 32631)  # the UTM zone at the centre of the new sites
    by = {}
    for c in changes.changes:
        by[(len(c.old_members), len(c.new_members))] = by.get((len(c.old_members), len(c.new_members)), []) + [c.change]
    labels = sorted(c.change for c in changes.changes)
    # west unchanged, east grown, gone, and the overlap site seen twice (one group of 2 old) is gone, not unknown:
    # the west tile saw it clearly even though the east tile's cloud hid it.
    assert labels == ["gone", "gone", "grown", "unchanged"], [(c.change, c.old_members, c.new_members, c.reason) for c in changes.changes]
    assert by[(2, 0)] == ["gone"]
    grown = next(c for c in changes.changes if c.change == "grown")
    assert grown.area_m2 / grown.old_area_m2 == pytest.approx(4.0, rel=0.01)
    sites, cover, crs = read_sites([old_w, old_e], crs=changes.crs)
    # the west tile saw the east tile's cloud: at most slivers of reprojected edges remain unobserved
    cloud_area = shapely.area(_to(cloud_east, "EPSG:4326", changes.crs))
    assert len(sites) == 5 and cover.date == OLD_DATE
    assert cover.unobserved is None or shapely.area(cover.unobserved) < 0.001 * cloud_area


def test_a_site_under_clouds_in_every_tile_is_unknown(tmp_path):
    site = (500, 500, 540, 540)
    old = _write_result(tmp_path / "old.gpkg", [site], date=OLD_DATE)
    new_a = _write_result(tmp_path / "a.gpkg", [], date=NEW_DATE, unobserved=[((480, 480, 600, 600), "masked")])
    new_b = _write_result(tmp_path / "b.gpkg", [], date=NEW_DATE, unobserved=[((490, 490, 560, 560), "nodata")])
    changes = compare_results([old], [new_a, new_b])
    # hidden by both tiles (a cloud in one, no data in the other); both reasons cover it all: the first file's wins
    assert [(c.change, c.reason) for c in changes.changes] == [("unknown", f"under clouds at {NEW_DATE}")]
    # one tile clear there: gone
    new_c = _write_result(tmp_path / "c.gpkg", [], date=NEW_DATE)
    assert [c.change for c in compare_results([old], [new_a, new_c]).changes] == ["gone"]


def test_output_gpkg_and_geojson_open_with_the_fields(pair, tmp_path):
    changes = compare_results([pair[0]], [pair[1]])
    for name in ("changes.gpkg", "changes.geojson"):
        path = changes.write(tmp_path / name)
        info = pyogrio.read_info(str(path))
        assert list(info["fields"]) == list(FIELDS) and info["geometry_type"] == "Polygon"
        assert info["features"] == len(changes) == 12
        meta, _, wkb, fields = pyogrio.raw.read(str(path))
        values = dict(zip(meta["fields"], fields))
        assert list(values["change"]) == [c.change for c in changes.changes]
        assert values["change"][0] == "new" and values["inside"][0] == 0  # the alert first
        assert list(values["site"]) == list(range(1, 13))
        gone = list(values["change"]).index("gone")
        assert np.isnan(values["area_m2"][gone]) and values["old_area_m2"][gone] == pytest.approx(160000)
        assert values["reason"][gone] is None  # null, not "" (a new site has no old_class_label either)
        lon, lat = Transformer.from_crs(UTM30, "EPSG:4326", always_xy=True).transform(601200.0, 796800.0)
        assert values["lon"][gone] == pytest.approx(lon, abs=1e-6) and values["lat"][gone] == pytest.approx(lat, abs=1e-6)
        if name.endswith(".gpkg"):
            assert CRS.from_user_input(meta["crs"]).to_epsg() == 32630
            stored = json.loads(info["layer_metadata"]["minescan"])
            assert pyogrio.list_layers(str(path))[0][0] == "changes"
        else:
            assert CRS.from_user_input(meta["crs"]).to_epsg() == 4326
            stored = json.loads(path.read_text())["minescan"]
        assert stored["counts"] == changes.counts() and stored["rule"]["min_iou"] == 0.1
        assert stored["date"] == NEW_DATE and stored["old_date"] == OLD_DATE


def test_geojson_results_in_with_sidecar_unobserved(tmp_path):
    old = _write_result(tmp_path / "old.geojson", [(100, 100, 150, 150), (500, 500, 540, 540)], date=OLD_DATE)
    new = _write_result(tmp_path / "new.geojson", [(100, 100, 150, 150)], date=NEW_DATE,
                        unobserved=[((480, 480, 600, 600), "masked")])
    assert (tmp_path / "new.unobserved.gpkg").is_file()
    changes = compare_results([old], [new])
    assert sorted((c.change, c.reason) for c in changes.changes) == [("unchanged", ""), ("unknown", f"under clouds at {NEW_DATE}")]
    assert changes.crs.to_epsg() == 32630


def test_any_polygon_file_gets_defaults(tmp_path):
    plain = tmp_path / "plain.gpkg"
    pyogrio.raw.write(str(plain), shapely.to_wkb(np.array([shapely.box(0, 0, 100, 100)], dtype=object)), [], [],
                      driver="GPKG", geometry_type="Polygon", crs=CRS.from_user_input(UTM30).to_wkt())
    sites, cover, crs = read_sites([plain])
    assert (sites.score[0], sites.flagged[0], sites.concession[0], sites.class_label[0]) == (1.0, 0, None, None)
    assert np.isnan(sites.masked[0]) and np.isnan(sites.inside[0]) and sites.scene[0] == "plain"
    assert cover.footprint is None and cover.unobserved is None and crs.to_epsg() == 32630
    # write_detections' files (no new fields yet) read too, class_label from the file
    det = write_detections(tmp_path / "det.gpkg", SceneDetections(np.array([[0, 0, 10, 10.0]]), np.array([0.7]),
                                                                  np.array([2], np.int32)),
                           transform=TRANSFORM, crs=UTM30, labels=LABELS, scene="x.tif")
    sites, _, _ = read_sites([det])
    assert sites.class_label[0] == "legal_mining" and sites.score[0] == pytest.approx(0.7)


@pytest.mark.filterwarnings("ignore:.crs. was not provided")
def test_files_that_cannot_be_compared_are_one_line(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a map\n")
    points = tmp_path / "points.gpkg"
    pyogrio.raw.write(str(points), shapely.to_wkb(np.array([shapely.Point(0, 0)], dtype=object)), [], [],
                      driver="GPKG", geometry_type="Point", crs=CRS.from_user_input(UTM30).to_wkt())
    nocrs = tmp_path / "nocrs.gpkg"
    pyogrio.raw.write(str(nocrs), shapely.to_wkb(np.array([shapely.box(0, 0, 1, 1)], dtype=object)), [], [],
                      driver="GPKG", geometry_type="Polygon")
    cases = {tmp_path / "missing.gpkg": "not found", text: "not a result file", points: "has no polygons",
             nocrs: "has no CRS"}
    for path, words in cases.items():
        with pytest.raises(ChangeError) as error:
            read_sites([path])
        message = str(error.value)
        assert message.startswith(str(path)) and words in message and "\n" not in message, message
    with pytest.raises(ChangeError, match="no result files"):
        read_sites([])


def test_rule_settings_are_checked():
    with pytest.raises(SettingError) as error:
        ChangeRule(min_iou=0)
    assert error.value.describe(flag(error.value.setting)) == "--min-iou 0: must be a number in (0, 1]"
    with pytest.raises(SettingError, match="max_unobserved"):
        ChangeRule(max_unobserved=1.0)


def _cli(argv, capsys):
    """The command as minescan.cli.main runs it: one handler, MinescanError as one line on stderr, exit 1."""
    parser = argparse.ArgumentParser(prog="minescan")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    try:
        code = args.handler(args)
    except MinescanError as exc:
        message = exc.describe(flag(exc.setting)) if isinstance(exc, SettingError) else str(exc)
        return 1, "", message
    out = capsys.readouterr().out
    return code, out, ""


def test_cli_writes_and_counts(pair, tmp_path, capsys):
    out = tmp_path / "changes.gpkg"
    code, text, _ = _cli(["compare", str(pair[0]), str(pair[1]), "--out", str(out)], capsys)
    assert code == 0 and out.is_file()
    lines = text.splitlines()
    assert lines[:6] == ["new        2", "gone       1", "grown      1", "shrunk     1", "unchanged  3", "unknown    4"]
    assert lines[-1] == f"12 sites -> {out}"
    assert "1 new site outside every concession" in text
    code, text, _ = _cli(["compare", str(pair[0]), str(pair[1]), "--out", str(out), "--max-unobserved", "0.8"], capsys)
    assert "gone       2" in text


def test_cli_also_files_and_errors(pair, tmp_path, capsys):
    extra = _write_result(tmp_path / "extra.gpkg", [(700, 300, 740, 340)], date=OLD_DATE)  # the old cloud's site, seen
    code, text, _ = _cli(["compare", str(pair[0]), str(pair[1]), "--also-old", str(extra), "--out",
                          str(tmp_path / "c.geojson")], capsys)
    # the extra tile saw the old cloud's place (unchanged now) and reaches past the old scene (a new site there)
    assert code == 0 and "unknown    2" in text and "unchanged  4" in text and "new        3" in text
    code, _, message = _cli(["compare", str(tmp_path / "nope.gpkg"), str(pair[1]), "--out", str(tmp_path / "c.gpkg")], capsys)
    assert code == 1 and message == f"{tmp_path / 'nope.gpkg'}: not found"
    code, _, message = _cli(["compare", str(pair[0]), str(pair[1]), "--out", str(tmp_path / "c.shp")], capsys)
    assert code == 1 and "--out must end in .gpkg or .geojson" in message
    code, _, message = _cli(["compare", str(pair[0]), str(pair[1]), "--out", str(tmp_path / "c.gpkg"), "--growth", "-1"], capsys)
    assert code == 1 and message.startswith("--growth -1")


def test_the_main_layer_is_the_first_that_is_not_unobserved(tmp_path):
    path = tmp_path / "first.gpkg"
    crs = CRS.from_user_input(UTM30).to_wkt()
    pyogrio.raw.write(str(path), shapely.to_wkb(np.array([_poly((0, 0, 100, 100))], dtype=object)),
                      [np.array(["masked"], dtype=object)], ["reason"], layer="unobserved", driver="GPKG",
                      geometry_type="Polygon", crs=crs)
    pyogrio.raw.write(str(path), shapely.to_wkb(np.array([_poly((10, 10, 20, 20))], dtype=object)),
                      [np.array([0.8])], ["score"], layer="scene", driver="GPKG", geometry_type="Polygon", crs=crs,
                      append=True, layer_metadata={"minescan": json.dumps({"date": NEW_DATE})})
    sites, cover, _ = read_sites([path])
    assert list(sites.score) == [0.8] and list(sites.date) == [NEW_DATE]
    assert cover.footprint is None and shapely.area(cover.unobserved) == pytest.approx(1000 * 1000)


def test_compare_help_loads_no_vector_stack():
    # The command line builds every parser at start-up: compare's reads its defaults from the pure rule module.
    code = (
        "import sys, argparse\n"
        "from minescan.cli.compare import add_parser\n"
        "p = argparse.ArgumentParser(prog='minescan'); add_parser(p.add_subparsers(dest='command'))\n"
        "try:\n    p.parse_args(['compare', '--help'])\nexcept SystemExit:\n    pass\n"
        "print('MODULES', ' '.join(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = set(out.strip().splitlines()[-1].removeprefix("MODULES ").split())
    assert "--max-unobserved" in out and "(default 0.5)" in out
    assert "minescan" in loaded and not loaded & {"pyogrio", "shapely", "pyproj", "rasterio"}, sorted(loaded)


@pytest.mark.parametrize("name", ["scan.gpkg", "scan.geojson"])
def test_results_as_the_scanner_writes_them(tmp_path, name):
    # write_detections with the scan's context fields and unobserved areas (layer in a gpkg, sidecar otherwise)
    from minescan.results.writers import CONTEXT_FIELDS

    def write(path, boxes, date, cloud):
        detections = SceneDetections(np.array(boxes, float).reshape(-1, 4), np.full(len(boxes), 0.8),
                                     np.ones(len(boxes), np.int32))
        n = len(boxes)
        extra = dict(zip(CONTEXT_FIELDS, [np.zeros(n), np.zeros(n, np.int32), np.array([None] * n, dtype=object),
                                          np.zeros(n)]))
        wgs84 = path.suffix == ".geojson"
        outline = _poly(SCENE)
        footprint = (_to(outline, UTM30, "EPSG:4326") if wgs84 else outline).wkt
        unobserved = None if cloud is None else (np.array([_poly(cloud)], dtype=object), np.array(["masked"], dtype=object))
        return write_detections(path, detections, transform=TRANSFORM, crs=UTM30, labels=LABELS, scene="s.tif",
                                metadata={"date": date, "footprint": footprint}, extra=extra, unobserved=unobserved)

    old_dir, new_dir = tmp_path / "old", tmp_path / "new"
    old_dir.mkdir(), new_dir.mkdir()
    old = write(old_dir / name, [(100, 100, 140, 140), (500, 500, 540, 540), (700, 700, 740, 740)], OLD_DATE, None)
    new = write(new_dir / name, [(100, 100, 140, 140)], NEW_DATE, (480, 480, 560, 560))
    changes = compare_results([old], [new])
    assert sorted((c.change, c.reason) for c in changes.changes) == [
        ("gone", ""), ("unchanged", ""), ("unknown", f"under clouds at {NEW_DATE}")]
    assert changes.alerts() == [] and all(c.inside == 0 for c in changes.changes)
