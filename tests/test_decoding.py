"""JPEG 2000 behind a VRT is read in whole decode blocks, once, and the bench reports the decode-once floor."""

import numpy as np
import pytest
import rasterio

from minescan.raster.decoding import block_windows, decode_floor, gdal_threads, native_block
from minescan.raster.grid import TileGrid
from minescan.raster.scene import Scene
from minescan.raster.sources.resolve import resolve
from minescan.raster.strips import RowEnd, StripReader
from minescan.synthetic.scene import BANDS, SceneSpec, write_scene
from testkit.products import write_safe

JP2_BLOCK = 384  # pieces and strips on the VRT's 128 px grid (512, 1024) would cut these tiles


@pytest.fixture(scope="module")
def jp2_bands(tmp_path_factory):
    """A 1300 x 1100 scene as one lossless JPEG 2000 file per band (384 px code tiles), stacked in a VRT by minescan."""
    folder = tmp_path_factory.mktemp("jp2")
    write_scene(folder / "scene.tif", SceneSpec(width=1300, height=1100, objects=20, seed=8))
    bands = folder / "bands"
    bands.mkdir()
    with rasterio.open(folder / "scene.tif") as src:
        for index, band in enumerate(BANDS, start=1):
            with rasterio.open(bands / f"T33UUP_{band}.jp2", "w", driver="JP2OpenJPEG", width=src.width, height=src.height,
                               count=1, dtype="uint16", crs=src.crs, transform=src.transform, QUALITY=100, REVERSIBLE="YES",
                               blockxsize=JP2_BLOCK, blockysize=JP2_BLOCK) as dst:
                dst.write(src.read(index), 1)
        reference = src.read((3, 2, 1))
    source = resolve(str(bands), folder / "vrt")
    return source, reference


def test_a_vrt_reports_the_decode_block_of_the_jpeg2000_files_behind_it(jp2_bands):
    source, _ = jp2_bands
    with Scene(source.dataset, bands=source.bands) as scene:
        assert scene.block_shape == (128, 128)  # what GDAL says of the VRT
        assert scene.decode_block == (JP2_BLOCK, JP2_BLOCK)


def test_a_safe_product_reports_its_jpeg2000_tiles(tmp_path):
    safe, _ = write_safe(tmp_path, SceneSpec(width=700, height=600, objects=0, seed=5))
    source = resolve(str(safe), tmp_path / "vrt")
    band_file = next(safe.rglob("*_B04_10m.jp2"))
    with rasterio.open(band_file) as src:
        jp2_block = tuple(src.block_shapes[0])
    with Scene(source.dataset, bands=source.bands) as scene:
        assert scene.decode_block == jp2_block != scene.block_shape


def test_a_plain_geotiff_keeps_its_own_blocks(make_scene):
    path, _ = make_scene(width=900, height=700, objects=0)
    with Scene(path) as scene:
        assert scene.decode_block == scene.block_shape == (512, 512)
    assert native_block(str(path), (512, 512)) == (512, 512)


def test_the_strip_reader_cuts_no_decode_block_and_its_tiles_are_the_scenes_pixels(jp2_bands, monkeypatch):
    source, reference = jp2_bands
    windows = []
    with Scene(source.dataset, bands=source.bands) as scene:
        read = scene.read_window

        def spy(window, handle=None):
            windows.append(window)
            return read(window, handle)

        monkeypatch.setattr(scene, "read_window", spy)
        grid = TileGrid(scene.width, scene.height, 320, 64)
        tiles = [t for t in StripReader(scene, grid, threads=2) if not isinstance(t, RowEnd)]
    assert len(tiles) == len(grid)
    # Every read starts on a code tile and ends on one (or on the scene's edge): no JPEG 2000 tile is decoded twice.
    for w in windows:
        assert w.col_off % JP2_BLOCK == 0 and w.row_off % JP2_BLOCK == 0
        assert (w.col_off + w.width) % JP2_BLOCK == 0 or w.col_off + w.width == 1300
        assert (w.row_off + w.height) % JP2_BLOCK == 0 or w.row_off + w.height == 1100
    covered = sum(int(w.width * w.height) for w in windows)
    assert covered == 1300 * 1100  # each pixel read once
    for item in tiles:
        t = item.tile
        expected = reference[:, t.row_off:t.row_off + t.valid_height, t.col_off:t.col_off + t.valid_width]
        assert np.array_equal(item.data[:, :t.valid_height, :t.valid_width], expected)


def test_the_decode_floor_reads_each_band_once_in_whole_blocks(jp2_bands):
    source, _ = jp2_bands
    floor = decode_floor(str(source.dataset), (1, 2, 3), (JP2_BLOCK, JP2_BLOCK), threads=2)
    assert floor.bands == (1, 2, 3) and floor.block == (JP2_BLOCK, JP2_BLOCK) and floor.seconds > 0
    blocks = block_windows(1300, 1100, (JP2_BLOCK, JP2_BLOCK))
    assert len(blocks) == 4 * 3 and sum(int(w.width * w.height) for w in blocks) == 1300 * 1100


@pytest.mark.parametrize("readers,cores,expected", [(4, 2, 1), (2, 2, 1), (1, 8, 8), (3, 8, 2)])
def test_gdal_threads_and_reader_threads_together_fill_the_cores_once(readers, cores, expected):
    assert gdal_threads(readers, cores) == expected


@pytest.mark.parametrize("interleave", ["pixel", "band"])
def test_the_decode_floor_decodes_each_block_of_an_interleaved_geotiff_once(tmp_path, monkeypatch, interleave):
    """Pixel-interleaved blocks hold every band: the floor reads them with all the chosen bands in one call."""
    import rasterio
    from rasterio.io import DatasetReader
    from rasterio.transform import from_origin

    path = tmp_path / f"{interleave}.tif"
    with rasterio.open(path, "w", driver="GTiff", width=600, height=400, count=4, dtype="uint16", crs="EPSG:32633",
                       transform=from_origin(0, 0, 10, 10), tiled=True, blockxsize=256, blockysize=256,
                       interleave=interleave) as out:
        out.write(np.ones((4, 400, 600), np.uint16))
    reads = []
    original = DatasetReader.read

    def spy(self, indexes=None, *args, window=None, **kwargs):
        reads.append((tuple(indexes) if isinstance(indexes, list) else indexes, (int(window.col_off), int(window.row_off))))
        return original(self, indexes, *args, window=window, **kwargs)

    monkeypatch.setattr(DatasetReader, "read", spy)
    decode_floor(str(path), (3, 2, 1), (256, 256), threads=2)
    blocks = [(int(w.col_off), int(w.row_off)) for w in block_windows(600, 400, (256, 256))]
    if interleave == "pixel":
        assert sorted(reads) == sorted(((3, 2, 1), b) for b in blocks)
    else:
        assert sorted(reads, key=str) == sorted(((band, b) for band in (3, 2, 1) for b in blocks), key=str)
