"""The native render and cut (minescan._native) against the numpy reference they replaced, bit for bit.

The reference (``testkit/reference_render.py``) is the numpy code of the product
before the native module; every dtype a scene can have, every map (gain, stretch,
histogram curves, uint8 passthrough), NaN/inf, nodata, band counts with and
without an unrolled loop, and tiles past the scene's edge are compared exactly.
"""

from __future__ import annotations

import numpy as np
import pytest

from minescan.raster.grid import TileGrid
from minescan.raster.native import native
from minescan.raster.radiometry import Radiometry, histogram_match, passthrough, percentile_stretch, reflectance_gain
from minescan.raster.strips import CutTile, _overlapping, _Piece
from minescan.scan.stream import make_batches
from rasterio.windows import Window
from testkit import reference_render

DTYPES = ["uint8", "int8", "uint16", "int16", "int32", "uint32", "int64", "uint64", "float16", "float32", "float64"]


def _data(dtype: str, bands: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if dt.kind == "f":
        data = rng.normal(1500, 1200, (bands, h, w)).astype(dt)
        flat = data.reshape(-1)
        flat[::97] = np.nan
        flat[5::211] = np.inf
        flat[7::223] = -np.inf
        flat[11::37] = 0.5  # exact halves and round levels, where rounding differs first
        return data
    info = np.iinfo(dt)
    low, high = max(info.min, -5000), min(info.max, 30000)
    data = rng.integers(low, high, (bands, h, w), dtype=np.int64, endpoint=True).astype(dt)
    data.reshape(-1)[::53] = info.max
    data.reshape(-1)[1::59] = info.min
    return data


def _maps(data: np.ndarray, nodata: np.ndarray) -> list[Radiometry]:
    bands = data.shape[0]
    maps = [reflectance_gain(bands, gain=2.5, offset=-1000), percentile_stretch(data, ~nodata, 2, 98),
            histogram_match(data, ~nodata, (1, 25, 50, 75, 99), tuple((5.0, 60.0, 110.0, 170.0, 250.0) for _ in range(bands)))]
    if data.dtype == np.uint8:
        maps.append(passthrough(bands))
    return maps


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bands", [1, 3, 5])
def test_render_equals_the_numpy_reference_for_every_dtype_and_map(dtype, bands):
    data = _data(dtype, bands, 37, 53)
    nodata = np.zeros(data.shape[1:], bool)
    nodata[3:9, 10:30] = True
    for radiometry in _maps(data, nodata):
        for mask in (None, nodata):
            got, masked = radiometry.render(data, mask)
            want = reference_render.render(radiometry, data, mask)
            assert got.dtype == np.uint8 and got.shape == (37, 53, bands)
            np.testing.assert_array_equal(got, want, err_msg=f"{dtype} {radiometry}")
            assert masked == (0 if mask is None else int(nodata.sum()))


def test_render_of_a_non_contiguous_view_and_an_unrenderable_type():
    data = _data("uint16", 4, 40, 40)
    view = data[[2, 1, 0], 5:30, 7:33]  # bands picked and a window: not contiguous
    radiometry = reflectance_gain(3)
    np.testing.assert_array_equal(radiometry.apply(view), reference_render.render(radiometry, view))
    from minescan.raster.radiometry import RadiometryError
    with pytest.raises(RadiometryError, match="complex64"):
        radiometry.apply(np.zeros((3, 4, 4), np.complex64))


def test_native_calls_refuse_mismatched_arrays_naming_them():
    data = np.zeros((3, 8, 8), np.uint16)
    tables = np.zeros((3, 65536), np.uint8)
    with pytest.raises(ValueError, match=r"out must be \[8, 8, 3\]"):
        native.render_table(data, tables, None, np.empty((8, 8, 4), np.uint8))
    with pytest.raises(ValueError, match=r"nodata must be \[8, 8\]"):
        native.render_table(data, tables, np.zeros((8, 9), bool), np.empty((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match=r"tables must be \[3, 65536\]"):
        native.render_table(data, tables[:, :256], None, np.empty((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="does not fit dst"):
        native.cut(np.empty((1, 4, 12), np.uint8), [], 3, 0, 0, 5, 4, 0)


def _pieces(scene: np.ndarray, mask: np.ndarray, radiometry: Radiometry, cols: list[int], rows: list[int]) -> list[_Piece]:
    """The scene cut into rendered pieces at the given column and row edges (as the strip reader makes them)."""
    out = []
    rows = sorted({min(r, scene.shape[1]) for r in rows})
    cols = sorted({min(c, scene.shape[2]) for c in cols})
    for r0, r1 in zip(rows[:-1], rows[1:]):
        for c0, c1 in zip(cols[:-1], cols[1:]):
            data, m = scene[:, r0:r1, c0:c1], mask[r0:r1, c0:c1]
            rgb, masked = radiometry.render(data, m)
            out.append(_Piece(Window(c0, r0, c1 - c0, r1 - r0), rgb, np.ascontiguousarray(m), masked))
    return out


@pytest.mark.parametrize("width,height,size,overlap", [(700, 530, 256, 64), (256, 256, 256, 0), (1000, 300, 384, 96)])
def test_tiles_cut_into_a_batch_equal_the_reference_cut_and_stack(width, height, size, overlap):
    scene = _data("uint16", 3, height, width, seed=1)
    mask = np.zeros((height, width), bool)
    mask[:, :90] = True  # a nodata band on the left: some tiles partial, some (at 256 px) nearly empty
    mask[400:, 650:] = True
    radiometry = reflectance_gain(3)
    pieces = _pieces(scene, mask, radiometry, [0, 300, 512, width], [0, 128, 256, height])
    grid = TileGrid(width, height, size, overlap)
    cut = [CutTile(t, _overlapping(t, pieces)) for t in grid]
    reference = [reference_render.cut(t, [(p.box[1], p.box[0], p.data, p.nodata) for p in pieces]) for t in grid]
    for tile, (rgb, nodata) in zip(cut, reference):
        np.testing.assert_array_equal(tile.rgb, rgb)
        np.testing.assert_array_equal(tile.nodata, nodata)
        assert tile.empty == bool(nodata.all())
        assert not (tile.clear and nodata.any())  # clear is the fast path: never claimed for a tile with nodata
    if width > size and height > size:  # and taken for whole tiles whose pieces have no nodata at all
        assert any(t.clear for t in cut)
    batches = list(make_batches(cut, 3))
    kept = [(t, r) for t, r in zip(grid, reference) if not r[1].all()]
    assert [t for b in batches for t in b.tiles] == [t for t, _ in kept]
    got = np.concatenate([b.rgb for b in batches])
    np.testing.assert_array_equal(got, reference_render.stack([r[0] for _, r in kept]))
    masks = [m for b in batches for m in b.nodata]
    for m, (_, (_, want)) in zip(masks, kept):
        np.testing.assert_array_equal(m, want)


def test_raw_bands_first_cut_equals_the_reference_for_wide_types():
    from minescan.raster.strips import assemble

    for dtype in ("uint16", "float32", "int64"):
        scene = _data(dtype, 4, 300, 500, seed=2)
        mask = np.zeros((300, 500), bool)
        mask[250:, :] = True
        pieces = [_Piece(Window(c0, 0, c1 - c0, 300), np.ascontiguousarray(scene[:, :, c0:c1]), np.ascontiguousarray(mask[:, c0:c1]))
                  for c0, c1 in ((0, 256), (256, 500))]
        for tile in TileGrid(500, 300, 256, 32):
            got = assemble(tile, pieces, 4, dtype)
            want, want_mask = reference_render.cut(tile, [(p.box[1], p.box[0], p.data, p.nodata) for p in pieces], channels_last=False)
            np.testing.assert_array_equal(got.data, want)
            np.testing.assert_array_equal(got.nodata, want_mask)
