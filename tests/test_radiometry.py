import numpy as np
import pytest

from minescan.raster.radiometry import RadiometryError, passthrough, percentile_stretch, reflectance_gain


def test_sentinel2_true_colour_is_reflectance_times_gain():
    dn = np.array([[[0, 1000, 2000, 4000, 9000]]] * 3, np.uint16)
    rgb = reflectance_gain(3).apply(dn)
    # reflectance 0, 0.1, 0.2, 0.4, 0.9 x 2.5 -> 0, 0.25, 0.5, 1.0 (clipped) x 255
    assert rgb.shape == (1, 5, 3) and rgb.dtype == np.uint8
    assert rgb[0, :, 0].tolist() == [0, 64, 128, 255, 255]


def test_boa_offset_is_added_before_scaling():
    dn = np.full((3, 1, 1), 2000, np.uint16)
    assert reflectance_gain(3, offset=-1000).apply(dn)[0, 0, 0] == 64  # (2000 - 1000) / 10000 * 2.5 * 255


def test_other_gain():
    dn = np.full((3, 1, 1), 1000, np.uint16)
    assert reflectance_gain(3, gain=5.0).apply(dn)[0, 0, 0] == 128


def test_nodata_pixels_become_zero_in_every_band():
    dn = np.full((3, 2, 2), 3000, np.uint16)
    nodata = np.array([[True, False], [False, False]])
    rgb = reflectance_gain(3).apply(dn, nodata)
    assert rgb[0, 0].tolist() == [0, 0, 0] and rgb[1, 1].tolist() == [191, 191, 191]


def test_percentile_stretch_maps_low_and_high_percentiles_to_0_and_255():
    values = np.arange(1, 101, dtype=np.uint16).reshape(1, 10, 10).repeat(3, axis=0)
    radiometry = percentile_stretch(values, np.ones((10, 10), bool), 0, 100)
    rgb = radiometry.apply(values)
    assert rgb[0, 0, 0] == 0 and rgb[9, 9, 0] == 255


def test_percentile_stretch_ignores_nodata():
    values = np.full((3, 4, 4), 500, np.uint16)
    values[:, 0, 0] = 0
    values[:, 3, 3] = 1500
    valid = values[0] != 0
    radiometry = percentile_stretch(values, valid, 0, 100)
    assert radiometry.low == (500.0,) * 3 and radiometry.high == (1500.0,) * 3


def test_uint8_passes_through():
    data = np.random.default_rng(0).integers(0, 256, (3, 4, 5)).astype(np.uint8)
    assert np.array_equal(passthrough(3).apply(data), np.moveaxis(data, 0, -1))


def test_bad_settings_are_refused():
    with pytest.raises(RadiometryError, match="gain must be positive, got 0"):
        reflectance_gain(3, gain=0)
    with pytest.raises(RadiometryError, match="percentiles"):
        percentile_stretch(np.zeros((3, 2, 2)), np.ones((2, 2), bool), 90, 10)
