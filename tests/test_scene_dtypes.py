"""Scenes of every renderable data type, NaN nodata, and the one-line errors of rasters minescan cannot scan.

Every file is written here: a uint16 scene from :func:`write_scene`, converted
to float32 reflectance (DN / 10000, NaN nodata), float32 DN, int16, int32,
uint32, and checked to render as the uint16 original does (within 1 DN) and
to scan to the same objects.
"""

import zipfile

import numpy as np
import pyogrio.raw
import pytest
import rasterio
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS
from rasterio.transform import from_origin
from rasterio.windows import Window

from minescan.cli import main
from minescan.raster.grid import TileGrid
from minescan.raster.radiometry import default_scale, radiometry_for
from minescan.raster.scene import Scene, SceneError, UnsupportedDtypeError
from minescan.raster.strips import StripReader
from minescan.results.evaluation import compare


def read_result(path):
    """(pixel boxes [N, 4], class ids [N]) of a result file."""
    meta, _, _, fields = pyogrio.raw.read(str(path))
    names = list(meta["fields"])
    boxes = np.stack([fields[names.index(k)] for k in ("col_min", "row_min", "col_max", "row_max")], axis=1)
    return boxes.reshape(-1, 4), fields[names.index("class_id")]


# (name, dtype, DN -> stored value, nodata value written to the file, nodata declared in the file)
CONVERSIONS = {
    "float32_reflectance": ("float32", lambda dn: dn.astype(np.float32) / np.float32(10000), np.nan, True),
    "float32_reflectance_undeclared_nan": ("float32", lambda dn: dn.astype(np.float32) / np.float32(10000), np.nan, False),
    "float64_reflectance": ("float64", lambda dn: dn.astype(np.float64) / 10000, np.nan, True),
    "float32_dn": ("float32", lambda dn: dn.astype(np.float32), 0.0, True),
    "int16": ("int16", lambda dn: dn.astype(np.int16), -9999, True),
    "int32": ("int32", lambda dn: dn.astype(np.int32), -1, True),
    "uint32": ("uint32", lambda dn: dn.astype(np.uint32), 0, True),
}


def convert(src_path, dst_path, kind):
    """``src_path`` (uint16, nodata 0) rewritten as ``kind``; nodata pixels get the kind's nodata value."""
    dtype, to_values, nodata_value, declared = CONVERSIONS[kind]
    with rasterio.open(src_path) as src:
        dn = src.read()
        profile = src.profile
        descriptions = src.descriptions
    nodata = (dn == 0).any(axis=0)
    values = to_values(dn)
    values[:, nodata] = nodata_value
    profile.update(dtype=dtype, nodata=nodata_value if declared else None)
    with rasterio.open(dst_path, "w", **profile) as dst:
        dst.write(values)
        dst.descriptions = descriptions
    return dst_path


def rendering(scene):
    """The radiometry the scan plan picks: recipe defaults, float scale from the scene's overview."""
    scale = 10000.0
    if np.dtype(scene.dtype).kind == "f":
        sample = scene.overview()
        scale, _ = default_scale(sample.data, ~sample.nodata)
    return radiometry_for(scene.dtype, len(scene.bands), scale=scale)


def rendered_tiles(path, size=256, overlap=32):
    with Scene(path, bands=(3, 2, 1)) as scene:
        grid = TileGrid(scene.width, scene.height, size, overlap)
        return [t for t in StripReader(scene, grid, 2, radiometry=rendering(scene)) if hasattr(t, "rgb")]


@pytest.fixture
def dn_scene(make_scene):
    return make_scene("dn.tif", width=700, height=600, objects=10, seed=5, tile=256, overlap=32, nodata_width=250)


@pytest.mark.parametrize("kind", list(CONVERSIONS))
def test_every_dtype_renders_as_the_uint16_scene(dn_scene, tmp_path, kind):
    path, _ = dn_scene
    other = convert(path, tmp_path / f"{kind}.tif", kind)
    with Scene(other, bands=(3, 2, 1)) as scene:
        assert scene.dtype == CONVERSIONS[kind][0]
        sample = scene.overview()
        expected_scale = 1.0 if "reflectance" in kind else 10000.0
        assert default_scale(sample.data, ~sample.nodata)[0] == expected_scale
    reference, tiles = rendered_tiles(path), rendered_tiles(other)
    assert len(reference) == len(tiles) == len(TileGrid(700, 600, 256, 32))
    assert sum(t.nodata.any() for t in reference) >= 3  # the swath edge is in the comparison
    for ref, tile in zip(reference, tiles):
        assert tile.tile == ref.tile
        assert np.array_equal(tile.nodata, ref.nodata)
        assert np.abs(tile.rgb.astype(int) - ref.rgb).max() <= 1
        assert not tile.rgb[tile.nodata].any()


def test_nan_pixels_are_nodata_with_or_without_a_declared_nodata(tmp_path):
    data = np.full((3, 300, 400), 0.05, np.float32)
    data[:, :, :224] = np.nan  # two whole tile columns (x 0-127 and 96-223 of 128/32 px tiles) lie inside
    data[1, 250, 300] = np.nan  # one band's NaN makes the pixel nodata
    transform = from_origin(300000, 5000000, 10, 10)
    for declared in (np.nan, None, -9999.0):  # NaN nodata, none, and a value that NaN pixels must not hide behind
        path = tmp_path / f"nan_{declared}.tif"
        with rasterio.open(path, "w", driver="GTiff", width=400, height=300, count=3, dtype="float32", nodata=declared,
                           crs="EPSG:32633", transform=transform) as dst:
            dst.write(data)
        with Scene(path) as scene:
            _, nodata = scene.read_window(Window(0, 0, 400, 300))
            assert np.array_equal(nodata, np.isnan(data).any(axis=0)), declared
            grid = TileGrid(400, 300, 128, 32)
            tiles = [t for t in StripReader(scene, grid, 2, radiometry=rendering(scene)) if hasattr(t, "rgb")]
        empty = [t.tile.col_off for t in tiles if t.empty]
        assert sorted(set(empty)) == [0, 96]  # the all-NaN tiles, which the scan skips
        assert all(not t.rgb[t.nodata].any() for t in tiles)


def scan(scene, model, out):
    return main(["scan", str(scene), "--model", str(model), "--out", str(out), "--bands", "3,2,1"])


def test_float_and_int16_scenes_find_the_same_objects_as_uint16(make_scene, square_model, tmp_path):
    path, truth = make_scene("dn.tif", width=1300, height=900, objects=14, seed=7, nodata_width=300)
    found = {}
    for kind in ("uint16", "float32_reflectance", "float32_dn", "int16"):
        scene = path if kind == "uint16" else convert(path, tmp_path / f"{kind}.tif", kind)
        out = tmp_path / f"{kind}.gpkg"
        assert scan(scene, square_model, out) == 0, kind
        boxes, classes = read_result(out)
        order = np.lexsort((boxes[:, 1], boxes[:, 0]))
        found[kind] = (boxes[order], classes[order])
    agreement = compare(found["uint16"][0], np.ones(len(found["uint16"][0])), found["uint16"][1], truth.boxes, truth.classes)
    assert agreement.matched == len(truth.boxes) == 14
    for kind in ("float32_reflectance", "float32_dn", "int16"):
        assert np.array_equal(found[kind][0], found["uint16"][0]), kind
        assert np.array_equal(found[kind][1], found["uint16"][1]), kind


def test_raster_georeferenced_only_by_gcps(tmp_path):
    path = tmp_path / "gcps.tif"
    gcps = [GroundControlPoint(0, 0, 300000, 5000000), GroundControlPoint(0, 100, 301000, 5000000),
            GroundControlPoint(100, 0, 300000, 4999000), GroundControlPoint(100, 100, 301000, 4999000)]
    with rasterio.open(path, "w", driver="GTiff", width=100, height=100, count=3, dtype="uint16",
                       gcps=gcps, crs=CRS.from_epsg(32633)) as dst:
        dst.write(np.ones((3, 100, 100), np.uint16))
    with pytest.raises(SceneError) as err:
        Scene(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(str(path))
    assert "georeferenced only by 4 ground control points" in message and "gdalwarp" in message


def test_truncated_compressed_file_says_what_gdal_found(make_scene):
    path, _ = make_scene("cut.tif", width=1200, height=1200, objects=5)  # DEFLATE, 512 px tiles
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with Scene(path, bands=(3, 2, 1)) as scene:
        with pytest.raises(SceneError) as err:
            list(StripReader(scene, TileGrid(scene.width, scene.height, 640, 128), 2))
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}: read failed at pixel")
    assert "See previous exception" not in message
    assert "TIFF" in message and ("Read error" in message or "bytes" in message), message


def test_band_errors_say_where_the_bands_came_from(tmp_path):
    path = tmp_path / "one.tif"
    with rasterio.open(path, "w", driver="GTiff", width=10, height=10, count=1, dtype="uint16",
                       crs="EPSG:32633", transform=from_origin(0, 0, 10, 10)) as dst:
        dst.write(np.ones((1, 10, 10), np.uint16))
    with pytest.raises(SceneError, match=r"^band 3 \(from the model's recipe\) is out of range: one.tif has 1 band$"):
        Scene(path, bands=(3, 2, 1), bands_origin="the model's recipe")
    with pytest.raises(SceneError, match=r"^band 3 \(from the option\) is out of range"):
        Scene(path, bands=(3, 2, 1), bands_origin="option")
    with pytest.raises(SceneError, match=r"^band 3 is out of range: one.tif has 1 band$"):
        Scene(path, bands=(3, 2, 1))


def test_unnamed_bands_message_does_not_talk_in_flags(tmp_path):
    path = tmp_path / "anon.tif"
    with rasterio.open(path, "w", driver="GTiff", width=10, height=10, count=4, dtype="uint16",
                       crs="EPSG:32633", transform=from_origin(0, 0, 10, 10)) as dst:
        dst.write(np.ones((4, 10, 10), np.uint16))
    with pytest.raises(SceneError) as err:
        Scene(path)
    assert "--" not in str(err.value) and "give its red, green, blue band indexes, e.g. 3,2,1" in str(err.value)


def test_complex_raster_is_refused_in_one_line(tmp_path):
    path = tmp_path / "slc.tif"
    with rasterio.open(path, "w", driver="GTiff", width=10, height=10, count=3, dtype="complex64",
                       crs="EPSG:32633", transform=from_origin(0, 0, 10, 10)) as dst:
        dst.write(np.ones((3, 10, 10), np.complex64))
    with pytest.raises(UnsupportedDtypeError) as err:
        Scene(path, bands=(1, 2, 3))
    message = str(err.value)
    assert "\n" not in message and str(path) in message and "complex64" in message


def test_gdal_dataset_names_that_are_not_local_files(dn_scene, tmp_path):
    path, _ = dn_scene
    with Scene(path, bands=(3, 2, 1)) as scene:
        expected = scene.read_window(Window(0, 0, 700, 600))
    archive = tmp_path / "scenes.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(path, "inner/dn.tif")
    with rasterio.MemoryFile(path.read_bytes(), filename="mem.tif") as memfile:
        for name, short in ((f"/vsizip/{archive}/inner/dn.tif", "dn.tif"), (memfile.name, "mem.tif")):
            with Scene(name, bands=(3, 2, 1)) as scene:
                assert scene.name == short and scene.dtype == "uint16" and scene.nodata == 0
                assert scene.block_shape == (512, 512)
                handle = scene.open_handle()
                try:
                    data, nodata = scene.read_window(Window(0, 0, 700, 600), handle)
                finally:
                    handle.close()
                assert np.array_equal(data, expected[0]) and np.array_equal(nodata, expected[1])
                assert scene.overview(100).data.shape == (3, 85, 100)
    with pytest.raises(SceneError, match="scene not found"):
        Scene(tmp_path / "missing.tif")
    with pytest.raises(SceneError, match=r"/vsizip/.*: cannot be opened"):
        Scene(f"/vsizip/{archive}/inner/missing.tif")
