"""Result files on disk: every format written, read back and checked; failed writes leave nothing behind."""

import json
import sys

import numpy as np
import pyogrio.raw
import pytest
import shapely
from affine import Affine
from pyproj import CRS, Transformer

from minescan.errors import MinescanError
from minescan.export.errors import ExportError
from minescan.model.detections import SceneDetections
from minescan.results.atomic import TEMPORARY_NAME, AtomicWriteError, atomic_path, temporary_path, write_atomically
from minescan.results.formats import ALIASES, RESULT_FORMATS
from minescan.results.read import read_result_file
from minescan.results.writers import (
    SHAPEFILE_FIELDS,
    WRITERS,
    OutputError,
    check_writable,
    output_driver,
    write_detections,
)
from minescan.runs.outdir import lock_run_folder

UTM = "EPSG:32633"
# 10 m pixels, north-up, top-left corner at (500000, 5000000) in UTM zone 33N.
TRANSFORM = Affine(10, 0, 500000, 0, -10, 5000000)
LABELS = {1: "illegal_mining", 2: "legal_mining"}
DETECTIONS = SceneDetections(
    np.array([[10, 20, 30, 50.5], [100, 100, 140, 120], [7.25, 300, 9.75, 333]], np.float64),
    np.array([0.95, 0.8, 0.5], np.float32),
    np.array([1, 2, 1], np.int32),
)
FORMATS = [".geojson", ".json", ".gpkg", ".shp", ".fgb", ".parquet"]


def _write(path, detections=DETECTIONS):
    return write_detections(path, detections, transform=TRANSFORM, crs=UTM, labels=LABELS, scene="S2A_MSIL2A_T33UUP.SAFE")


def read_back(path):
    """(CRS, shapely geometries, fields by name) of a result file, as a GIS would read it."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        geo = json.loads(table.schema.metadata[b"geo"])
        column = geo["columns"][geo["primary_column"]]
        fields = {n: table.column(n).to_numpy(zero_copy_only=False) for n in table.column_names if n != "geometry"}
        return CRS.from_json_dict(column["crs"]), shapely.from_wkb(table.column("geometry").to_pylist()), fields
    meta, _, geometry, values = pyogrio.raw.read(str(path))
    return CRS.from_user_input(meta["crs"]), shapely.from_wkb(geometry), dict(zip(meta["fields"], values))


def _needs(ext):
    if ext == ".parquet":
        pytest.importorskip("pyarrow")


def _listing(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("ext", FORMATS)
def test_each_format_reads_back_with_its_crs_classes_labels_and_scores(tmp_path, ext):
    _needs(ext)
    path = _write(tmp_path / f"result{ext}")
    crs, geometries, fields = read_back(path)
    assert len(geometries) == 3 and shapely.get_type_id(geometries).tolist() == [3, 3, 3]  # polygons
    assert crs.equals(CRS.from_epsg(4326) if ext in (".geojson", ".json") else CRS.from_user_input(UTM))
    label = SHAPEFILE_FIELDS["class_label"] if ext == ".shp" else "class_label"
    assert all(len(name) <= 10 for name in fields) or ext != ".shp"
    assert fields["class_id"].tolist() == [1, 2, 1]
    assert fields[label].tolist() == ["illegal_mining", "legal_mining", "illegal_mining"]
    np.testing.assert_array_equal(fields["score"].astype(np.float32), DETECTIONS.scores)  # best first, in every format
    assert fields["scene"].tolist() == ["S2A_MSIL2A_T33UUP.SAFE"] * 3
    boxes = np.stack([fields[k] for k in ("col_min", "row_min", "col_max", "row_max")], axis=1)
    np.testing.assert_array_equal(boxes, DETECTIONS.boxes)


@pytest.mark.parametrize("ext", [".gpkg", ".shp", ".fgb", ".parquet"])
def test_scene_crs_formats_hold_the_pixel_corners_exactly(tmp_path, ext):
    _needs(ext)
    _, geometries, _ = read_back(_write(tmp_path / f"result{ext}"))
    for polygon, (x0, y0, x1, y1) in zip(geometries, DETECTIONS.boxes):
        corners = {tuple(TRANSFORM * (c, r)) for c in (x0, x1) for r in (y0, y1)}
        ring = shapely.get_coordinates(polygon)
        assert {tuple(xy) for xy in ring} == corners and len(ring) == 5
    # The first box: columns 10-30, rows 20-50.5 -> x 500100-500300, y 4999495-4999800.
    assert shapely.bounds(geometries[0]).tolist() == [500100.0, 4999495.0, 500300.0, 4999800.0]


def test_geojson_is_wgs84_longitude_latitude_within_a_millimetre(tmp_path):
    _, geometries, _ = read_back(_write(tmp_path / "result.geojson"))
    to_utm = Transformer.from_crs(4326, UTM, always_xy=True)
    lon, lat = shapely.get_coordinates(geometries[0]).T
    assert 14 < lon.min() < 16 and 45 < lat.min() < 46  # zone 33N near 15 E, 45 N: lon/lat order
    x, y = to_utm.transform(lon, lat)
    np.testing.assert_allclose(sorted(set(np.round(x, 3))), [500100, 500300], atol=1e-3)
    np.testing.assert_allclose(sorted(set(np.round(y, 3))), [4999495, 4999800], atol=1e-3)
    assert shapely.is_ccw(shapely.get_exterior_ring(geometries)).all()  # RFC 7946 exteriors


@pytest.mark.parametrize("ext", [".geojson", ".gpkg", ".shp", ".fgb", ".parquet"])
def test_minescans_reader_reads_every_format_back(tmp_path, ext):
    _needs(ext)
    result = read_result_file(_write(tmp_path / f"result{ext}"), scores=True)
    assert result.class_ids.tolist() == [1, 2, 1] and result.labels == LABELS
    np.testing.assert_allclose(result.boxes(CRS.from_user_input(UTM))[1], [501000, 4998800, 501400, 4999000], atol=1e-3)


@pytest.mark.parametrize("ext", [".geojson", ".gpkg", ".shp", ".fgb", ".parquet"])
def test_no_detections_is_a_valid_empty_file(tmp_path, ext):
    _needs(ext)
    empty = SceneDetections(np.zeros((0, 4)), np.zeros(0, np.float32), np.zeros(0, np.int32))
    crs, geometries, fields = read_back(_write(tmp_path / f"result{ext}", empty))
    assert len(geometries) == 0 and ("class_id" in fields or ext == ".geojson")  # GeoJSON keeps fields in features only
    assert crs.equals(CRS.from_epsg(4326) if ext == ".geojson" else CRS.from_user_input(UTM))
    assert len(read_result_file(tmp_path / f"result{ext}", scores=True).class_ids) == 0


def test_shapefile_writes_its_sidecars_and_nothing_else(tmp_path):
    _write(tmp_path / "r.shp")
    assert _listing(tmp_path) == ["r.cpg", "r.dbf", "r.prj", "r.shp", "r.shx"]
    assert (tmp_path / "r.cpg").read_text().strip().upper() in ("UTF-8", "UTF8")


@pytest.mark.parametrize("ext", [".geojson", ".gpkg", ".shp", ".fgb"])
def test_a_write_failing_midway_keeps_the_old_result_and_leaves_no_temporary(tmp_path, monkeypatch, ext):
    path = _write(tmp_path / f"r{ext}", SceneDetections(np.array([[1.0, 1, 2, 2]]), np.array([0.7], np.float32), np.array([2], np.int32)))
    before = {name: (tmp_path / name).read_bytes() for name in _listing(tmp_path)}
    real_write = pyogrio.raw.write

    def fails_after_writing(target, *args, **kwargs):
        real_write(target, *args, **kwargs)  # the whole new file (and sidecars) exists under the temporary name
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(pyogrio.raw, "write", fails_after_writing)
    with pytest.raises(OutputError, match=rf"^cannot write {path}: disk on fire$"):
        _write(path)
    assert {name: (tmp_path / name).read_bytes() for name in _listing(tmp_path)} == before


def test_a_geoparquet_write_failing_midway_keeps_the_old_result(tmp_path, monkeypatch):
    pq = pytest.importorskip("pyarrow.parquet")
    path = _write(tmp_path / "r.parquet")
    before = path.read_bytes()
    real_write = pq.write_table

    def fails_after_writing(table, where, *args, **kwargs):
        real_write(table, where, *args, **kwargs)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pq, "write_table", fails_after_writing)
    with pytest.raises(AtomicWriteError, match=rf"^cannot write {path}: No space left on device$"):
        _write(path, SceneDetections.empty())
    assert _listing(tmp_path) == ["r.parquet"] and path.read_bytes() == before


def test_an_interrupt_midway_leaves_the_old_result(tmp_path, monkeypatch):
    path = _write(tmp_path / "r.gpkg")
    before = path.read_bytes()

    def interrupted(target, *args, **kwargs):
        with open(target, "wb") as partial:
            partial.write(b"half a geopackage")
        raise KeyboardInterrupt

    monkeypatch.setattr(pyogrio.raw, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _write(path)
    assert _listing(tmp_path) == ["r.gpkg"] and path.read_bytes() == before


def test_a_rename_the_os_refuses_leaves_the_destination_and_no_temporary(tmp_path):
    # A folder in the way: os.replace fails even for root (an unwritable folder would not stop root).
    (tmp_path / "r.gpkg").mkdir()
    (tmp_path / "r.gpkg" / "keep.txt").write_text("mine")
    with pytest.raises(AtomicWriteError, match=r"^cannot write .*r\.gpkg: Is a directory$") as caught:
        _write(tmp_path / "r.gpkg")
    assert isinstance(caught.value, MinescanError) and not isinstance(caught.value, ExportError)
    assert _listing(tmp_path) == ["r.gpkg"] and (tmp_path / "r.gpkg" / "keep.txt").read_text() == "mine"


def test_unknown_format_names_the_file_and_the_formats_without_cli_flags(tmp_path):
    for name in ("x.foo", "noextension"):
        with pytest.raises(OutputError) as caught:
            check_writable(tmp_path / name)
        suffix = "'.foo'" if name == "x.foo" else "'(no extension)'"
        assert str(caught.value) == f"{tmp_path / name}: unknown result format {suffix}; use .gpkg, .geojson, .shp, .fgb or .parquet"
    with pytest.raises(OutputError, match="unknown result format '.foo'"):
        _write(tmp_path / "x.foo")
    assert _listing(tmp_path) == []


def test_check_writable_fails_before_anything_is_written(tmp_path):
    (tmp_path / "adir.gpkg").mkdir()
    for name, message in (("missing/r.gpkg", "folder .*missing does not exist"), ("adir.gpkg", "is a folder")):
        with pytest.raises(OutputError, match=message) as caught:
            check_writable(tmp_path / name)
        assert "--" not in str(caught.value)
    check_writable(tmp_path / "fine.SHP")  # extensions in any case
    assert output_driver("a.SHP") == "ESRI Shapefile" and output_driver("b.json") == "GeoJSON"


def test_geoparquet_without_pyarrow_says_which_extra_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # makes `import pyarrow` fail like a missing package
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(OutputError) as caught:
        check_writable(tmp_path / "r.parquet")
    message = str(caught.value)
    assert message.startswith("GeoParquet (.parquet) needs pyarrow (") and message.endswith("pip install 'minescan[geoparquet]'")
    assert "\n" not in message
    with pytest.raises(OutputError, match="needs pyarrow"):
        _write(tmp_path / "r.parquet")
    assert _listing(tmp_path) == []


def test_the_geoparquet_metadata_follows_the_spec(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    schema = pq.read_schema(_write(tmp_path / "r.parquet"))
    geo = json.loads(schema.metadata[b"geo"])
    assert geo["version"] == "1.1.0" and geo["primary_column"] == "geometry"
    column = geo["columns"]["geometry"]
    assert column["encoding"] == "WKB" and column["geometry_types"] == ["Polygon"]
    assert CRS.from_json_dict(column["crs"]).to_epsg() == 32633
    assert column["bbox"] == [500072.5, 4996670.0, 501400.0, 4999800.0]
    assert str(schema.field("geometry").type) == "binary"


def test_the_writer_registry_covers_exactly_the_listed_formats():
    assert set(WRITERS) == set(RESULT_FORMATS) and set(ALIASES.values()) <= set(WRITERS)
    assert all(ext in RESULT_FORMATS or ext in ALIASES for ext in FORMATS)


def test_write_atomically_replaces_whole_files_and_reports_failures(tmp_path):
    path = tmp_path / "sub" / "model.onnx"
    assert write_atomically(path, b"first") == 5 and path.read_bytes() == b"first"
    assert write_atomically(path, memoryview(b"second!")) == 7 and path.read_bytes() == b"second!"
    assert _listing(path.parent) == ["model.onnx"]
    (tmp_path / "plain").write_bytes(b"")  # the permissions of any new file, not mkstemp's private 0600
    assert path.stat().st_mode & 0o777 == (tmp_path / "plain").stat().st_mode & 0o777
    (tmp_path / "afile").write_text("x")
    with pytest.raises(AtomicWriteError, match=rf"^cannot write {tmp_path / 'afile' / 'm.onnx'}: "):
        write_atomically(tmp_path / "afile" / "m.onnx", b"data")


def test_atomic_path_moves_sidecars_first_and_drops_stale_ones(tmp_path):
    (tmp_path / "r.old").write_text("stale sidecar of the previous result")
    with atomic_path(tmp_path / "r.main", sidecars=(".side", ".old")) as temporary:
        assert temporary.parent == tmp_path and temporary.name.startswith(".r.main.") and not temporary.exists()
        temporary.write_text("main")
        temporary.with_suffix(".side").write_text("side")
    assert _listing(tmp_path) == ["r.main", "r.side"]
    with pytest.raises(AtomicWriteError, match="the writer left no file"):
        with atomic_path(tmp_path / "r.main"):
            pass
    assert _listing(tmp_path) == ["r.main", "r.side"]


def test_a_run_folder_sweeps_temporaries_a_killed_writer_left(tmp_path):
    stale = [temporary_path(tmp_path / "scene.gpkg"), temporary_path(tmp_path / "r.shp").with_suffix(".dbf")]
    stale.append(stale[0].with_name(stale[0].name + "-journal"))
    stale.append(tmp_path / ".plain.4242.tmp.gpkg")  # the older naming
    for path in stale:
        assert TEMPORARY_NAME.match(path.name), path.name
        path.write_bytes(b"half")
    (tmp_path / "scene.gpkg").write_bytes(b"kept")
    (tmp_path / ".hidden.tmp.notes").write_text("not ours")
    lock = lock_run_folder(tmp_path)
    lock.close()
    assert _listing(tmp_path) == [".hidden.tmp.notes", ".minescan.lock", "scene.gpkg"]
