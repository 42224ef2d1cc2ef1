"""Concession joins (minescan.context.concessions) on small layers the tests write themselves."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pyogrio
import pyogrio.raw
import pytest
import shapely
from pyproj import Transformer

from minescan.context import (
    ConcessionError,
    ConcessionFieldError,
    open_concessions,
    outside_counts,
    partly_outside_counts,
)
from minescan.errors import SettingError

UTM = "EPSG:32633"
X0, Y0 = 500_000.0, 5_000_000.0  # near 45 N, 15 E: the zone's central meridian


def box(x0, y0, x1, y1):
    return shapely.box(X0 + x0, Y0 + y0, X0 + x1, Y0 + y1)


def write_layer(path: Path, geometries, fields: dict[str, list] | None = None, crs: str | None = UTM,
                geometry_type: str = "Polygon", layer: str | None = None) -> Path:
    fields = fields or {}
    data = [np.asarray(values, dtype=object if isinstance(values[0], str) else None) for values in fields.values()]
    wkb = np.array([shapely.to_wkb(g) for g in geometries], dtype=object)
    pyogrio.raw.write(str(path), wkb, data, list(fields), geometry_type=geometry_type, crs=crs,
                      layer=layer or path.stem)
    return path


def join(path: Path, polygons, crs: str = UTM, **kwargs):
    return open_concessions(path, **kwargs).join(polygons, crs)


@pytest.fixture
def two(tmp_path: Path) -> Path:
    """A = [0, 100] x [0, 100], B = [50, 200] x [0, 100] (overlapping by [50, 100])."""
    return write_layer(tmp_path / "two.gpkg", [box(0, 0, 100, 100), box(50, 0, 200, 100)], {"id": ["A", "B"]})


def test_half_inside_is_half(tmp_path):
    path = write_layer(tmp_path / "one.gpkg", [box(0, 0, 100, 100)], {"id": ["A"]})
    result = join(path, [box(50, 0, 150, 100), box(10, 10, 90, 90)])
    assert list(result.concession) == ["A", "A"]
    np.testing.assert_allclose(result.inside, [0.5, 1.0], atol=1e-12)
    assert result.inside[1] == 1.0  # wholly inside is exactly 1
    np.testing.assert_allclose(result.share, result.inside)


def test_overlapping_concessions_count_once_and_the_largest_share_wins(two):
    result = join(two, [box(-50, 10, 130, 90), box(60, 10, 300, 90)])
    assert result.concession[0] == "A"  # A holds 100/180, B 80/180
    assert result.inside[0] == pytest.approx(130 / 180, abs=1e-12)  # the union [0, 130], not 180/180
    assert result.share[0] == pytest.approx(100 / 180, abs=1e-12)
    assert result.concession[1] == "B"  # A holds 40/240, B 140/240
    assert result.inside[1] == pytest.approx(140 / 240, abs=1e-12)


def test_equal_shares_go_to_the_lowest_id(two, tmp_path):
    # [-50, 150]: A holds [0, 100], B [50, 150]: 0.5 each; the union [0, 150] is 0.75.
    result = join(two, [box(-50, 0, 150, 100)])
    assert result.concession[0] == "A" and result.inside[0] == pytest.approx(0.75, abs=1e-12)
    numbers = write_layer(tmp_path / "numbers.gpkg", [box(0, 0, 100, 100), box(50, 0, 200, 100)],
                          {"licence_id": [10, 9]})
    assert join(numbers, [box(-50, 0, 150, 100)]).concession[0] == "9"  # numeric order: 9 < 10


def test_outside_and_touching_are_none(two):
    result = join(two, [box(300, 0, 400, 100), box(200, 0, 260, 100), box(200, 100, 260, 160), box(-60, 10, 0, 20)])
    assert list(result.concession) == [None] * 4
    assert list(result.inside) == [0.0] * 4 and list(result.share) == [0.0] * 4
    assert result.outside.all()


def test_invariants_on_random_boxes(two):
    rng = np.random.default_rng(0)
    x = rng.uniform(-100, 250, 300)
    y = rng.uniform(-100, 150, 300)
    w = rng.uniform(1, 120, 300)
    result = join(two, [box(a, b, a + c, b + c) for a, b, c in zip(x, y, w)])
    assert np.all((result.inside >= 0) & (result.inside <= 1))
    assert np.all(result.share <= result.inside + 1e-12)
    assert np.array_equal(np.array([c is None for c in result.concession]), result.inside == 0)
    assert 0 < np.count_nonzero(result.outside) < 300


def _squares():
    """Nine 2 km concessions with 500 m gaps, and detections of 300 m scattered over and between them."""
    squares = [box(i * 2500, j * 2500, i * 2500 + 2000, j * 2500 + 2000) for i in range(3) for j in range(3)]
    rng = np.random.default_rng(1)
    corners = rng.uniform(-500, 7500, (200, 2))
    boxes = [box(x, y, x + 300, y + 300) for x, y in corners]
    return squares, [f"c{k}" for k in range(9)], boxes


def test_geographic_layer_gives_the_projected_answer(tmp_path):
    squares, ids, boxes = _squares()
    projected = write_layer(tmp_path / "utm.gpkg", squares, {"id": ids})
    to_lonlat = Transformer.from_crs(UTM, "EPSG:4326", always_xy=True)
    dense = shapely.segmentize(np.array(squares, dtype=object), 5.0)  # the same edges, as lon/lat vertices every 5 m
    lonlat = shapely.transform(dense, lambda xy: np.column_stack(to_lonlat.transform(xy[:, 0], xy[:, 1])))
    geographic = write_layer(tmp_path / "lonlat.gpkg", lonlat, {"id": ids}, crs="EPSG:4326")
    boxes = boxes + [box(2000, 500, 2300, 800), box(-300, 500, 0, 800)]  # along c0's right and left edges: outside
    a, b = join(projected, boxes), join(geographic, boxes)
    assert list(b.concession[-2:]) == [None, None] and list(b.inside[-2:]) == [0.0, 0.0]
    assert list(a.concession) == list(b.concession)
    np.testing.assert_allclose(a.inside, b.inside, atol=1e-6)
    assert 0 < np.count_nonzero(a.outside) < len(boxes) and np.count_nonzero(a.partly_outside) > 0


def test_detections_in_another_crs(tmp_path):
    squares, ids, boxes = _squares()
    path = write_layer(tmp_path / "utm.gpkg", squares, {"id": ids})
    to_lonlat = Transformer.from_crs(UTM, "EPSG:4326", always_xy=True)
    # Boxes well inside or well outside keep their answer when asked in lon/lat.
    inner = [box(100, 100, 400, 400), box(2100, 100, 2400, 400)]
    lonlat = [shapely.transform(shapely.segmentize(g, 5.0), lambda xy: np.column_stack(to_lonlat.transform(xy[:, 0], xy[:, 1])))
              for g in inner]
    result = join(path, lonlat, crs="EPSG:4326")
    assert list(result.concession) == ["c0", None] and list(result.inside) == [1.0, 0.0]


@pytest.mark.parametrize("suffix", [".gpkg", ".geojson", ".shp"])
def test_formats(tmp_path, suffix):
    squares, ids, boxes = _squares()
    reference = join(write_layer(tmp_path / "ref.gpkg", squares, {"id": ids}), boxes)
    path = write_layer(tmp_path / f"cadastre{suffix}", squares, {"id": ids})
    result = join(path, boxes)
    assert list(result.concession) == list(reference.concession)
    np.testing.assert_allclose(result.inside, reference.inside, atol=1e-9)


def test_field_default_and_chosen(tmp_path):
    squares, ids, boxes = _squares()
    fields = {"holder": [f"holder {k}" for k in range(9)], "Licence_ID": [f"L-{k}" for k in range(9)],
              "area_ha": [400.0 + k for k in range(9)]}
    path = write_layer(tmp_path / "cadastre.gpkg", squares, fields)
    layer = open_concessions(path)
    assert layer.field == "Licence_ID" and layer.default
    # Whether GDAL answers from the R-tree depends on the SQLite it loaded (another library's in one process may lack
    # R-tree support): the line says which, either way.
    index = "indexed" if layer.indexed else "no spatial index"
    assert layer.describe() == f"cadastre.gpkg (layer cadastre, 9 polygons, EPSG:32633, {index}), field Licence_ID [default]"
    inner = [box(100, 100, 400, 400)]
    assert layer.join(inner, UTM).concession[0] == "L-0"
    chosen = open_concessions(path, field="HOLDER")  # letter case does not matter when unambiguous
    assert chosen.field == "holder" and not chosen.default and "[default]" not in chosen.describe()
    assert chosen.join(inner, UTM).concession[0] == "holder 0"
    assert open_concessions(path, field="area_ha").join(inner, UTM).concession[0] == "400"  # integral floats as integers

    bare = write_layer(tmp_path / "bare.gpkg", squares, {"holder": [f"h{k}" for k in range(9)]})
    layer = open_concessions(bare)
    assert layer.field is None and "feature id (fid)" in layer.describe()
    assert layer.join(inner, UTM).concession[0] == "1"  # GeoPackage fids start at 1


def test_bbox_prefilter_reads_only_nearby_features(tmp_path):
    grid = [box(i * 1000, j * 1000, i * 1000 + 900, j * 1000 + 900) for i in range(40) for j in range(40)]
    path = write_layer(tmp_path / "grid.gpkg", grid, {"id": [f"g{k}" for k in range(len(grid))]})
    layer = open_concessions(path)
    assert layer.count == 1600
    boxes = [box(100, 100, 200, 200), box(1500, 1500, 2100, 2050)]
    result = layer.join(boxes, UTM)
    assert result.total == 1600 and 1 <= result.read <= 16
    assert list(result.concession) == ["g0", "g41"]
    assert layer.reads == 1
    extent = (X0, Y0, X0 + 5000, Y0 + 5000)
    first = layer.join(boxes, UTM, extent=extent)
    again = layer.join(boxes[:1], UTM, extent=extent)  # same extent: the cached index, no new read
    assert layer.reads == 2 and first.read == again.read and first.read <= 49
    assert list(first.concession) == ["g0", "g41"]


def test_empty_layer_and_no_detections(tmp_path):
    path = write_layer(tmp_path / "empty.gpkg", [box(0, 0, 1, 1)], {"id": ["x"]})
    empty = tmp_path / "none.gpkg"
    pyogrio.raw.write(str(empty), np.empty(0, object), [np.empty(0, object)], ["id"], geometry_type="Polygon", crs=UTM,
                      layer="none")
    layer = open_concessions(empty)
    assert layer.count == 0
    result = layer.join([box(0, 0, 10, 10)], UTM)
    assert list(result.concession) == [None] and list(result.inside) == [0.0]
    assert len(open_concessions(path).join([], UTM)) == 0


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_errors_name_the_file_in_one_line(tmp_path):
    with pytest.raises(ConcessionError) as exc:
        open_concessions(tmp_path / "nowhere.gpkg")
    assert one_line(exc) == f"{tmp_path / 'nowhere.gpkg'}: not found"

    text = tmp_path / "notes.gpkg"
    text.write_text("not a vector file\n")
    with pytest.raises(ConcessionError) as exc:
        open_concessions(text)
    assert one_line(exc).startswith(f"{text}: not a readable vector file")

    fields = {"licence_id": ["a"], "holder": ["h"], "status": ["s"]}
    path = write_layer(tmp_path / "cadastre.gpkg", [box(0, 0, 1, 1)], fields)
    with pytest.raises(ConcessionFieldError) as exc:
        open_concessions(path, field="licence")
    assert one_line(exc) == f"concession_field 'licence': {path} has no such field (fields: licence_id, holder, status)"
    assert isinstance(exc.value, SettingError) and isinstance(exc.value, ConcessionError)
    assert exc.value.describe("--concession-field").startswith("--concession-field 'licence': ")

    points = write_layer(tmp_path / "wells.gpkg", [shapely.Point(X0, Y0)], {"id": ["w"]}, geometry_type="Point")
    with pytest.raises(ConcessionError) as exc:
        open_concessions(points)
    assert one_line(exc) == f"{points}: layer wells holds Point geometries, not polygons"

    with pytest.raises(ConcessionError) as exc:
        open_concessions(path, layer="licences")
    assert one_line(exc) == f"{path}: no layer 'licences' (layers: cadastre)"

    shp = write_layer(tmp_path / "nocrs.shp", [box(0, 0, 1, 1)], {"id": ["a"]})
    shp.with_suffix(".prj").unlink()
    with pytest.raises(ConcessionError) as exc:
        open_concessions(shp)
    assert one_line(exc).startswith(f"{shp}: layer nocrs has no CRS")


def test_mixed_layer_with_a_line_fails_at_join(tmp_path):
    path = tmp_path / "mixed.geojson"
    path.write_text('{"type": "FeatureCollection", "features": ['
                    '{"type": "Feature", "properties": {"id": "a"}, "geometry": {"type": "Polygon", "coordinates": '
                    '[[[15, 45], [15.01, 45], [15.01, 45.01], [15, 45.01], [15, 45]]]}},'
                    '{"type": "Feature", "properties": {"id": "b"}, "geometry": {"type": "LineString", "coordinates": '
                    '[[15, 45], [15.01, 45.01]]}}]}')
    layer = open_concessions(path)
    with pytest.raises(ConcessionError) as exc:
        layer.join([shapely.box(14.99, 44.99, 15.02, 45.02)], "EPSG:4326")
    assert one_line(exc).endswith("is a LineString, not a polygon") and str(path) in str(exc.value)


def test_joins_from_four_threads_agree(tmp_path):
    squares, ids, boxes = _squares()
    to_lonlat = Transformer.from_crs(UTM, "EPSG:4326", always_xy=True)
    lonlat = shapely.transform(shapely.segmentize(np.array(squares, dtype=object), 5.0),
                               lambda xy: np.column_stack(to_lonlat.transform(xy[:, 0], xy[:, 1])))
    path = write_layer(tmp_path / "cadastre.gpkg", lonlat, {"id": ids}, crs="EPSG:4326")
    layer = open_concessions(path)
    expected = open_concessions(path).join(boxes, UTM)
    extents = [None, (X0 - 1000, Y0 - 1000, X0 + 9000, Y0 + 9000)]
    results, errors = [], []

    def work(k: int) -> None:
        try:
            for repeat in range(5):
                results.append(layer.join(boxes, UTM, extent=extents[(k + repeat) % 2]))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(results) == 20
    for result in results:
        assert list(result.concession) == list(expected.concession)
        np.testing.assert_array_equal(result.inside, expected.inside)
    assert layer.reads == 2  # one index per extent, however many threads asked


def test_outside_counts_per_class(two):
    boxes = [box(10, 10, 20, 20), box(300, 0, 310, 10), box(-10, 0, 10, 10), box(400, 0, 410, 10)]
    result = join(two, boxes)
    labels = ["mine", "mine", "tailings", "tailings"]
    assert outside_counts(result, labels) == {"mine": 1, "tailings": 1}
    assert partly_outside_counts(result, labels) == {"mine": 0, "tailings": 1}
    assert outside_counts(result, ["mine", "mine", "mine", "pit"]) == {"mine": 1, "pit": 1}
    with pytest.raises(ValueError):
        outside_counts(result, ["mine"])


def test_adjacent_concessions_add_up(tmp_path):
    path = write_layer(tmp_path / "strip.gpkg", [box(0, 0, 100, 100), box(100, 0, 200, 100)], {"id": ["A", "B"]})
    result = join(path, [box(50, 0, 150, 100), box(40, 0, 150, 100)])
    assert result.inside[0] == pytest.approx(1.0, abs=1e-12) and result.concession[0] == "A"  # tie: lowest id
    assert result.inside[1] == pytest.approx(1.0, abs=1e-12) and result.concession[1] == "A"  # 60/110 against 50/110


def test_matches_a_brute_force_answer(tmp_path):
    from shapely import affinity

    concessions = [box(0, 0, 100, 100), box(50, 50, 180, 150), box(100, 0, 200, 50),  # overlapping, adjacent
                   shapely.Polygon([(X0 + 250, Y0), (X0 + 350, Y0 + 40), (X0 + 300, Y0 + 150), (X0 + 220, Y0 + 90)]),
                   box(260, 20, 300, 60)]  # inside the star: overlaps it
    ids = ["k1", "k2", "k3", "k4", "k5"]
    path = write_layer(tmp_path / "mixed.gpkg", concessions, {"id": ids})
    rng = np.random.default_rng(5)
    polygons = []
    for x, y, w, h, angle in zip(rng.uniform(-50, 350, 400), rng.uniform(-50, 150, 400), rng.uniform(5, 120, 400),
                                 rng.uniform(5, 120, 400), rng.choice([0, 0, 17, 45], 400)):
        polygons.append(affinity.rotate(box(x, y, x + w, y + h), angle))
    result = join(path, polygons)
    for k, polygon in enumerate(polygons):
        shares = np.array([shapely.intersection(polygon, c).area / polygon.area for c in concessions])
        inside = shapely.union_all([shapely.intersection(polygon, c) for c in concessions]).area / polygon.area
        assert result.inside[k] == pytest.approx(inside, abs=1e-9)
        if shares.max() > 0:
            assert result.concession[k] == ids[int(np.flatnonzero(shares >= shares.max() - 1e-9)[0])]
            assert result.share[k] == pytest.approx(shares.max(), abs=1e-9)
        else:
            assert result.concession[k] is None


def test_null_ids_are_named_by_fid(tmp_path):
    path = tmp_path / "nulls.geojson"
    path.write_text('{"type": "FeatureCollection", "features": ['
                    '{"type": "Feature", "properties": {"licence_id": "L-1"}, "geometry": {"type": "Polygon", '
                    '"coordinates": [[[15, 45], [15.01, 45], [15.01, 45.01], [15, 45.01], [15, 45]]]}},'
                    '{"type": "Feature", "properties": {"licence_id": null}, "geometry": {"type": "Polygon", '
                    '"coordinates": [[[15.02, 45], [15.03, 45], [15.03, 45.01], [15.02, 45.01], [15.02, 45]]]}}]}')
    result = join(path, [shapely.box(15.001, 45.001, 15.002, 45.002), shapely.box(15.021, 45.001, 15.022, 45.002)],
                  crs="EPSG:4326")
    assert list(result.concession) == ["L-1", "#1"]  # GeoJSON fids start at 0


def test_an_extent_too_small_is_widened(two):
    layer = open_concessions(two)
    result = layer.join([box(150, 10, 160, 20), box(-50, 10, 130, 90)], UTM, extent=(X0 + 140, Y0, X0 + 170, Y0 + 30))
    assert list(result.concession) == ["B", "A"] and result.inside[1] == pytest.approx(130 / 180, abs=1e-12)


def test_a_layer_travels_to_another_process_by_pickle(two):
    import pickle

    layer = open_concessions(two)
    boxes = [box(-50, 10, 130, 90), box(300, 0, 310, 10)]
    expected = layer.join(boxes, UTM)
    copy = pickle.loads(pickle.dumps(layer))
    assert copy.describe() == layer.describe() and copy.reads == 0
    result = copy.join(boxes, UTM)
    assert list(result.concession) == list(expected.concession) and list(result.inside) == list(expected.inside)


def test_a_geojson_layer_is_parsed_once_for_many_extents(tmp_path):
    squares, ids, boxes = _squares()
    reference = join(write_layer(tmp_path / "ref.gpkg", squares, {"id": ids}), boxes)
    path = write_layer(tmp_path / "cadastre.geojson", squares, {"id": ids})
    layer = open_concessions(path)
    assert "no spatial index, read whole once" in layer.describe()
    first = layer.join(boxes[:1], UTM)
    result = layer.join(boxes, UTM)  # another extent: taken from memory, not the file
    assert layer.reads == 1 and first.read < result.read <= 9
    assert list(result.concession) == list(reference.concession)
    np.testing.assert_allclose(result.inside, reference.inside, atol=1e-9)


def test_multipolygon_concessions_and_missing_polygons(tmp_path):
    parts = shapely.MultiPolygon([box(0, 0, 100, 100), box(200, 0, 300, 100)])
    path = write_layer(tmp_path / "multi.gpkg", [parts], {"id": ["M"]}, geometry_type="MultiPolygon")
    result = join(path, [box(50, 0, 250, 100), None, box(120, 10, 180, 90)])
    assert list(result.concession) == ["M", None, None]
    assert result.inside[0] == pytest.approx(0.5, abs=1e-12) and list(result.inside[1:]) == [0.0, 0.0]
