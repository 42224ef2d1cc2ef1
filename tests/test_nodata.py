"""Nodata semantics on real files: a value is nodata in ALL chosen bands, a mask or alpha band decides, NaN in ANY.

See :mod:`minescan.raster.scene` for the rule.
"""

import re

import numpy as np
import pyogrio.raw
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

from minescan.cli import main
from minescan.raster.scene import Scene
from minescan.results.evaluation import compare
from minescan.synthetic.scene import Truth

def read_result(path):
    """(pixel boxes [N, 4], class ids) of a result file."""
    meta, _, _, fields = pyogrio.raw.read(str(path))
    names = list(meta["fields"])
    boxes = np.stack([fields[names.index(k)] for k in ("col_min", "row_min", "col_max", "row_max")], axis=1)
    return boxes.reshape(-1, 4), fields[names.index("class_id")]


GEO = dict(crs="EPSG:32633", transform=from_origin(300000, 5000000, 10, 10))


def _write(path, data, **profile):
    count, height, width = data.shape
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=count, dtype=data.dtype, **GEO, **profile) as dst:
        dst.write(data)
    return path


def _mask(path, **options):
    with Scene(path, **options) as scene:
        return scene.read_window(Window(0, 0, scene.width, scene.height))[1]


def _scan(capsys, scene, model, out, *extra):
    capsys.readouterr()
    assert main(["scan", str(scene), "--model", str(model), "--out", str(out), *extra]) == 0
    text = capsys.readouterr().out
    tiles, skipped = map(int, re.search(r"(\d+) tiles \((\d+) skipped as nodata\)", text).groups())
    return read_result(out), tiles, skipped


def test_pure_colours_are_data_when_nodata_is_zero(tmp_path):
    data = np.full((3, 4, 4), 40, np.uint8)
    pixels = {(0, 0): (255, 0, 0), (0, 1): (0, 255, 0), (0, 2): (0, 0, 255), (0, 3): (0, 0, 0), (1, 0): (0, 0, 9)}
    for (row, col), rgb in pixels.items():
        data[:, row, col] = rgb
    mask = _mask(_write(tmp_path / "rgb.tif", data, nodata=0, photometric="RGB"))
    expected = np.zeros((4, 4), bool)
    expected[0, 3] = True  # only the pixel that is 0 in every band
    assert np.array_equal(mask, expected)


def test_a_swath_edge_zero_in_every_band_is_nodata(tmp_path):
    data = np.full((4, 50, 60), 800, np.uint16)
    data[:, :, :20] = 0  # the swath edge: no value in any band
    data[0, 10, 30] = 0  # one band at 0 (a dark blue band over water): still data
    data[:3, 20, 40] = 0  # the three chosen bands at 0, band 4 not: nodata among the chosen bands
    mask = _mask(_write(tmp_path / "s2.tif", data, nodata=0), bands=(3, 2, 1))
    expected = np.zeros((50, 60), bool)
    expected[:, :20] = True
    expected[20, 40] = True
    assert np.array_equal(mask, expected)


def test_pure_red_and_cyan_objects_are_found_with_nodata_zero(tmp_path, square_model, capsys):
    data = np.full((3, 400, 500), 40, np.uint8)
    data[:, :, :100] = 0  # nodata strip
    data[:, 50:80, 200:240] = np.array([255, 0, 0], np.uint8)[:, None, None]  # pure red: class 1, score 0.5
    data[:, 200:230, 300:330] = np.array([0, 200, 255], np.uint8)[:, None, None]  # no red: class 2, score 0.5
    scene = _write(tmp_path / "rgb.tif", data, nodata=0, photometric="RGB")
    (boxes, classes, *_), _, _ = _scan(capsys, scene, square_model, tmp_path / "r.gpkg", "--score-threshold", "0.3")
    order = np.argsort(boxes[:, 0])
    assert boxes[order].tolist() == [[200, 50, 240, 80], [300, 200, 330, 230]]
    assert classes[order].tolist() == [1, 2]


def test_the_nodata_option_overrides_the_rasters_value(tmp_path, square_model, capsys):
    data = np.full((3, 512, 768), 40, np.uint8)
    data[:, :, :256] = 7  # a fill value the file does not declare: the first column of 256 px tiles
    data[:, 100:130, 400:430] = 0  # black in every band: nodata by the file's value, data under --nodata 7
    data[:, 300:330, 560:600] = np.array([250, 60, 30], np.uint8)[:, None, None]
    scene = _write(tmp_path / "rgb.tif", data, nodata=0, photometric="RGB")
    assert np.array_equal(_mask(scene, nodata=7), (data == 7).all(axis=0))
    assert np.array_equal(_mask(scene), (data == 0).all(axis=0))
    options = ("--tile", "256", "--overlap", "0")
    (boxes, *_), tiles, skipped = _scan(capsys, scene, square_model, tmp_path / "own.gpkg", *options)
    assert (tiles, skipped, boxes.tolist()) == (6, 0, [[560, 300, 600, 330]])
    (boxes, *_), tiles, skipped = _scan(capsys, scene, square_model, tmp_path / "opt.gpkg", *options, "--nodata", "7")
    assert (tiles, skipped, boxes.tolist()) == (6, 2, [[560, 300, 600, 330]])


def test_an_alpha_band_decides(tmp_path, square_model, capsys):
    rgb = np.full((3, 512, 768), 40, np.uint8)
    rgb[:, 10:20, 300:310] = 0  # black but opaque: data
    rgb[:, 300:330, 560:600] = np.array([250, 60, 30], np.uint8)[:, None, None]
    alpha = np.full((1, 512, 768), 255, np.uint8)
    alpha[:, :, :256] = 0  # transparent: nodata whatever the colour
    rgb[:, :, :256] = 200  # bright under the transparent part: would be detected if it were data
    scene = _write(tmp_path / "rgba.tif", np.concatenate([rgb, alpha]), photometric="RGB", alpha="YES")
    with rasterio.open(scene) as src:
        assert src.colorinterp[3] == rasterio.enums.ColorInterp.alpha
    assert np.array_equal(_mask(scene, bands=(1, 2, 3)), alpha[0] == 0)
    (boxes, *_), tiles, skipped = _scan(capsys, scene, square_model, tmp_path / "r.gpkg", "--bands", "1,2,3", "--tile", "256", "--overlap", "0")
    assert (tiles, skipped, boxes.tolist()) == (6, 2, [[560, 300, 600, 330]])


def test_a_per_dataset_mask_decides(tmp_path):
    data = np.full((3, 64, 96), 40, np.uint8)
    data[:, 5, 50] = 0  # black, and valid by the mask: data
    valid = np.full((64, 96), 255, np.uint8)
    valid[:, :30] = 0
    path = tmp_path / "masked.tif"
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        with rasterio.open(path, "w", driver="GTiff", width=96, height=64, count=3, dtype="uint8", photometric="RGB", **GEO) as dst:
            dst.write(data)
            dst.write_mask(valid)
    with rasterio.open(path) as src:
        assert rasterio.enums.MaskFlags.per_dataset in src.mask_flag_enums[0]
    assert np.array_equal(_mask(path), valid == 0)
    assert not _mask(path, nodata=99).any()  # an explicit value overrides the mask


def test_nan_in_any_band_is_nodata(tmp_path):
    data = np.full((3, 8, 8), 0.1, np.float32)
    data[1, 2, 3] = np.nan
    data[:, 4, 4] = 0.0  # 0 in every band, nodata by value
    mask = _mask(_write(tmp_path / "f.tif", data, nodata=0.0), bands=(1, 2, 3))
    expected = np.zeros((8, 8), bool)
    expected[2, 3] = expected[4, 4] = True
    assert np.array_equal(mask, expected)


def test_partly_nodata_tiles_next_to_skipped_ones_and_an_object_on_the_swath_edge(make_scene, square_model, tmp_path, capsys):
    width, height, edge = 1280, 1024, 600  # swath edge: nodata where col < 600 - row / 4
    on_edge = (int(np.ceil(edge - 0.25 * 400)), 400, int(np.ceil(edge - 0.25 * 400)) + 30, 430)  # touches the edge at its top-left
    objects = [on_edge, (800, 100, 830, 130), (700, 900, 740, 930), (1000, 500, 1030, 540)]
    scene, truth = make_scene(width=width, height=height, nodata_width=edge, truth=Truth.of(objects, [1, 2, 1, 2]))
    mask = _mask(scene, bands=(3, 2, 1))
    assert mask[400, on_edge[0] - 1] and not mask[400, on_edge[0]]  # the object's left neighbour is nodata
    (boxes, classes, *_), tiles, skipped = _scan(
        capsys, scene, square_model, tmp_path / "r.gpkg", "--bands", "3,2,1", "--tile", "256", "--overlap", "32"
    )
    assert skipped > 0 and tiles > skipped
    agreement = compare(boxes, np.ones(len(boxes)), classes, truth.boxes, truth.classes)
    assert (agreement.matched, agreement.detections, agreement.duplicates) == (4, 4, 0)
    assert agreement.mean_iou >= 0.99
