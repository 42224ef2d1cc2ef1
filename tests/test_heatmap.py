"""Tile classifiers, first pieces (issue 15): the classifier contract, heatmap blending, the COG heatmap writer."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from minescan.model.contract import ContractError, TensorSpec, check_classifier, model_task
from minescan.results.heatmap import UINT8_NODATA, encode_uint8, write_heatmap
from minescan.scan.heatmap import HeatmapAccumulator, HeatmapError, HeatmapLayout, window_weights

IMAGE = [TensorSpec("input_tensor", "uint8", (None, 128, 128, 3))]


def test_a_model_is_told_by_its_outputs_and_one_that_is_neither_is_named():
    detector = [TensorSpec("detection_boxes", "float", (1, 100, 4)), TensorSpec("detection_scores", "float", (1, 100)),
                TensorSpec("detection_classes", "float", (1, 100)), TensorSpec("num_detections", "float", (1,))]
    assert model_task("d.onnx", IMAGE, detector) == "detector"
    assert model_task("c.onnx", IMAGE, [TensorSpec("probabilities", "float", (None, 3))]) == "classifier"
    signature = check_classifier("c.onnx", IMAGE, [TensorSpec("probabilities", "float", (None, 3))])
    assert (signature.height, signature.width, signature.classes, signature.output) == (128, 128, 3, "probabilities")
    with pytest.raises(ContractError) as caught:
        model_task("seg.onnx", IMAGE, [TensorSpec("mask", "float", (None, 128, 128, 2))])
    message = str(caught.value)
    assert message.startswith("seg.onnx is neither a detector") and "outputs mask float [?, 128, 128, 2]" in message
    assert "\n" not in message
    with pytest.raises(ContractError, match="expected float probabilities"):
        check_classifier("c.onnx", IMAGE, [TensorSpec("label", "int64", (None, 3))])


def test_layout_windows_reach_every_edge_and_stride_must_divide_the_window():
    layout = HeatmapLayout.of(1000, 700, 128)  # stride 64
    assert layout.stride == 64 and layout.span == 2 and layout.shape == (11, 16)
    rows, cols = layout.window_shape
    last = list(layout.windows())[-1]
    assert last[2] + layout.window >= 1000 and last[3] + layout.window >= 700  # the last windows reach the edges
    assert len(layout) == rows * cols
    with pytest.raises(HeatmapError, match="must divide"):
        HeatmapLayout.of(1000, 700, 128, 48)


def test_a_constant_field_blends_to_the_constant_without_seams_and_order_does_not_matter():
    layout = HeatmapLayout.of(1024, 768, 128, 32)  # span 4: every cell under up to 16 windows
    forward, backward = HeatmapAccumulator(layout, 2), HeatmapAccumulator(layout, 2)
    windows = list(layout.windows())
    for i, j, _, _ in windows:
        forward.add(i, j, np.array([0.3, 0.7]))
    for i, j, _, _ in reversed(windows):
        backward.add(i, j, np.array([0.3, 0.7]))
    result = forward.result()
    np.testing.assert_allclose(result[0], 0.3, atol=1e-6)
    np.testing.assert_allclose(result[1], 0.7, atol=1e-6)
    np.testing.assert_allclose(result, backward.result(), atol=1e-6)


def test_a_step_between_windows_becomes_a_ramp_weighted_towards_central_windows():
    layout = HeatmapLayout.of(512, 128, 128, 32)
    heat = HeatmapAccumulator(layout, 1)
    for i, j, col, _ in layout.windows():
        heat.add(i, j, np.array([1.0 if col >= 256 else 0.0]))
    row = heat.result()[0, 0]
    assert row[0] == 0.0 and row[-1] == 1.0
    assert np.all(np.diff(row) >= -1e-9) and 0.0 < row[len(row) // 2] < 1.0  # monotone, no seam, no jump
    assert window_weights(4)[1, 1] > window_weights(4)[0, 0] > 0


def test_nodata_windows_and_cells_are_nodata_not_zero_probability():
    layout = HeatmapLayout.of(512, 512, 128, 64)
    heat = HeatmapAccumulator(layout, 1)
    for i, j, col, row in layout.windows():
        heat.add(i, j, np.array([0.9]), valid=not (col == 0 and row == 0))  # the top-left window is all nodata
    nodata_cells = np.zeros(layout.shape, bool)
    nodata_cells[-1, -1] = True  # a cell whose own pixels are all nodata
    result = heat.result(nodata_cells)
    assert np.isnan(result[0, 0, 0]) and np.isnan(result[0, -1, -1])
    assert np.nanmin(result) == pytest.approx(0.9, abs=1e-6) and np.isnan(result).sum() == 2


def test_the_heatmap_is_a_georeferenced_cog_with_named_bands_overviews_and_nodata(tmp_path):
    layout = HeatmapLayout.of(10980, 10980, 128, 64)
    rows, cols = layout.shape
    yy, xx = np.mgrid[0:rows, 0:cols]
    probabilities = np.stack([xx / (cols - 1), 1 - xx / (cols - 1)]).astype(np.float32)
    probabilities[:, :5, :5] = np.nan
    transform = from_origin(300000, 5000040, 10, 10)
    for as_float in (False, True):
        path = write_heatmap(tmp_path / f"heat{as_float}.tif", probabilities, transform=transform, crs="EPSG:32633",
                             stride=64, labels=["mining", "other"], as_float=as_float)
        with rasterio.open(path) as src:
            assert src.descriptions == ("mining", "other") and src.crs.to_epsg() == 32633
            assert src.transform.a == 640 and (src.transform.c, src.transform.f) == (300000, 5000040)
            assert (src.height, src.width) == (rows, cols) and src.overviews(1)  # internal overviews
            assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
            data = src.read(1)
            if as_float:
                assert np.isnan(data[0, 0]) and data[0, -1] == pytest.approx(1.0)
            else:
                assert src.nodata == UINT8_NODATA and data[0, 0] == UINT8_NODATA and data[-1, -1] == 254
    assert encode_uint8(np.array([[[0.5, np.nan, 1.2]]])).tolist() == [[[127, 255, 254]]]
