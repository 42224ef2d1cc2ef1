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


# --- Every renderable dtype -------------------------------------------------------------


def test_formula_on_float_data_equals_the_uint16_table_exactly():
    dn = np.random.default_rng(1).integers(0, 65536, (3, 64, 64)).astype(np.uint16)
    for radiometry in (reflectance_gain(3), reflectance_gain(3, offset=-1000, gain=3.1), percentile_stretch(dn, np.ones((64, 64), bool))):
        table = radiometry.apply(dn)
        assert np.array_equal(radiometry.apply(dn.astype(np.float64)), table)
        assert np.array_equal(radiometry.apply(dn.astype(np.int32)), table)
        assert np.array_equal(radiometry.apply(dn.astype(np.uint32)), table)
        assert np.abs(radiometry.apply(dn.astype(np.float32)).astype(int) - table).max() <= 1


def test_signed_16_and_8_bit_tables_index_negative_values_correctly():
    values = np.array([[[-32768, -1000, -200, 0, 999, 1000, 5000, 32767]]] * 3, np.int16)
    radiometry = reflectance_gain(3, offset=1000)  # -1000 -> reflectance 0; 0 -> 0.1
    expected = radiometry.apply(values.astype(np.float64))
    assert np.array_equal(radiometry.apply(values), expected)
    assert expected[0, :, 0].tolist() == [0, 0, 51, 64, 127, 128, 255, 255]
    small = np.array([[[-128, -1, 0, 1, 127]]] * 3, np.int8)
    stretch = percentile_stretch(small, np.ones((1, 5), bool), 0, 100)
    assert np.array_equal(stretch.apply(small), stretch.apply(small.astype(np.float64)))
    assert stretch.apply(small)[0, :, 0].tolist() == [0, 127, 128, 129, 255]


def test_nan_renders_zero_and_infinities_clip():
    data = np.array([[[np.nan, -np.inf, np.inf, 0.1, 0.4]]] * 3, np.float32)
    rgb = reflectance_gain(3, scale=1.0).apply(data)
    assert rgb[0, :, 0].tolist() == [0, 0, 255, 64, 255]


def test_apply_does_not_modify_its_input():
    data = np.array([[[0.1, 0.2]]] * 3, np.float32)
    before = data.copy()
    reflectance_gain(3, scale=1.0).apply(data)
    assert np.array_equal(data, before)


def test_unrenderable_dtypes_are_refused():
    from minescan.raster.radiometry import radiometry_for, renderable

    assert [renderable(t) for t in ("uint8", "int16", "uint32", "float32", "float64")] == [True] * 5
    assert [renderable(t) for t in ("complex64", "complex_int16", "bool")] == [False] * 3
    with pytest.raises(RadiometryError, match="cannot render complex64 data"):
        reflectance_gain(3).apply(np.zeros((3, 2, 2), np.complex64))
    with pytest.raises(RadiometryError, match="cannot render complex_int16 data"):
        radiometry_for("complex_int16", 3)


def test_percentile_stretch_of_float_data_skips_nan():
    data = np.full((3, 4, 4), 0.2, np.float32)
    data[:, 0, :] = 0.1
    data[:, 3, :] = 0.3
    data[:, 1, 1] = np.nan  # valid by the mask, but not a number
    radiometry = percentile_stretch(data, np.ones((4, 4), bool), 0, 100)
    assert np.allclose(radiometry.low, 0.1) and np.allclose(radiometry.high, 0.3)
    assert radiometry.apply(data)[1, 1].tolist() == [0, 0, 0]


def test_default_scale_tells_reflectance_from_dn():
    from minescan.raster.radiometry import default_scale

    valid = np.ones((10, 10), bool)
    reflectance = np.random.default_rng(0).uniform(0, 0.5, (3, 10, 10)).astype(np.float32)
    scale, why = default_scale(reflectance, valid)
    assert scale == 1.0 and why.startswith("reflectance (99th percentile 0.")
    scale, why = default_scale(reflectance * 10000, valid)
    assert scale == 10000.0 and why.startswith("DN (99th percentile")
    # Nodata and NaN do not count: DN-sized values masked off leave reflectance.
    mixed = reflectance.copy()
    mixed[:, :5] = 5000
    mixed[:, 5, 5] = np.nan
    masked = valid.copy()
    masked[:5] = False
    assert default_scale(mixed, masked)[0] == 1.0
    assert default_scale(mixed, valid)[0] == 10000.0
    assert default_scale(mixed, np.zeros((10, 10), bool))[0] == 10000.0


def test_radiometry_for_resolved_settings():
    from minescan.raster.radiometry import radiometry_for

    assert radiometry_for("uint8", 3, gain=9.0).passthrough
    assert radiometry_for("uint16", 3, gain=2.5, offset=-1000, scale=10000) == reflectance_gain(3, offset=-1000)
    assert radiometry_for(np.float32, 3, scale=1.0) == reflectance_gain(3, scale=1.0)
    data = np.arange(48, dtype=np.int16).reshape(3, 4, 4)
    nodata = np.zeros((4, 4), bool)
    stretched = radiometry_for("int16", 3, stretch=(0, 100), sample=(data, nodata))
    assert stretched.low == (0.0, 16.0, 32.0) and stretched.high == (15.0, 31.0, 47.0)
    with pytest.raises(RadiometryError, match="needs a scene-wide sample"):
        radiometry_for("int16", 3, stretch=(2, 98))
