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
    assert (last[0] + layout.window, last[1] + layout.window) == (1000, 700)  # the last windows end on the edges
    assert len(layout) == rows * cols
    with pytest.raises(HeatmapError, match="must divide"):
        HeatmapLayout.of(1000, 700, 128, 48)


def test_a_constant_field_blends_to_the_constant_without_seams_and_order_does_not_matter():
    layout = HeatmapLayout.of(1024, 768, 128, 32)  # span 4: every cell under up to 16 windows
    forward, backward = HeatmapAccumulator(layout, 2), HeatmapAccumulator(layout, 2)
    windows = list(layout.windows())
    for col, row in windows:
        forward.add(col, row, np.array([0.3, 0.7]))
    for col, row in reversed(windows):
        backward.add(col, row, np.array([0.3, 0.7]))
    result = forward.result()
    np.testing.assert_allclose(result[0], 0.3, atol=1e-6)
    np.testing.assert_allclose(result[1], 0.7, atol=1e-6)
    np.testing.assert_allclose(result, backward.result(), atol=1e-6)


def test_a_step_between_windows_becomes_a_ramp_weighted_towards_central_windows():
    layout = HeatmapLayout.of(512, 128, 128, 32)
    heat = HeatmapAccumulator(layout, 1)
    for col, row in layout.windows():
        heat.add(col, row, np.array([1.0 if col >= 256 else 0.0]))
    row = heat.result()[0, 0]
    assert row[0] == 0.0 and row[-1] == 1.0
    assert np.all(np.diff(row) >= -1e-9) and 0.0 < row[len(row) // 2] < 1.0  # monotone, no seam, no jump
    assert window_weights(4)[1, 1] > window_weights(4)[0, 0] > 0


def test_nodata_windows_and_cells_are_nodata_not_zero_probability():
    layout = HeatmapLayout.of(500, 500, 128, 64)  # the last windows are shifted inward
    heat = HeatmapAccumulator(layout, 1)
    for col, row in layout.windows():
        nodata = np.zeros((128, 128), bool)
        if (col, row) == (0, 0):
            nodata[:] = True  # the top-left window is all nodata
        if col + 128 == 500 and row + 128 == 500:
            nodata[-52:, -52:] = True  # the scene's bottom-right 52 px hold no data
        heat.add(col, row, np.array([0.9]), nodata)
    result = heat.result()
    assert np.isnan(result[0, 0, 0]) and np.isnan(result[0, -1, -1])  # nodata cells stay nodata, not 0
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


def test_a_classifier_scans_a_scene_into_a_heatmap_through_the_api_and_the_command_line(tmp_path, capsys):
    from minescan import Scanner
    from minescan.cli import main
    from minescan.synthetic.scene import SceneSpec, write_scene
    from testkit.bright_classifier import save_bright_classifier
    from testkit.square_detector import save_square_detector

    model = str(save_bright_classifier(tmp_path / "bright.onnx", size=64))
    scene = tmp_path / "scene.tif"
    truth = write_scene(scene, SceneSpec(width=900, height=640, objects=12, seed=4, nodata_width=60))
    result = Scanner(model).scan(scene, stride=16)
    heat = result.probabilities[1]  # class 2, "bright"
    assert result.stride == 16 and heat.shape == (40, 57) and result.band_labels == ["background", "bright"]
    for x0, y0, x1, y1 in truth.boxes:  # a bright square's centre cell sees it
        assert heat[int((y0 + y1) / 2) // 16, int((x0 + x1) / 2) // 16] > 0
    covered = np.zeros(heat.shape, bool)  # cells within a window's reach of any square
    for x0, y0, x1, y1 in truth.boxes:
        covered[max(0, int(y0) // 16 - 4) : int(y1) // 16 + 5, max(0, int(x0) // 16 - 4) : int(x1) // 16 + 5] = True
    assert np.nanmax(heat[~covered]) == 0.0  # nowhere else anything bright
    assert np.isnan(heat[0, 0]) and not np.isnan(heat[-1, -1])  # the swath's nodata corner stays nodata
    np.testing.assert_allclose(np.nansum(result.probabilities, axis=0)[~np.isnan(heat)], 1.0, atol=1e-5)
    out = tmp_path / "heat.tif"
    assert main(["scan", str(scene), "--model", model, "--out", str(out), "--stride", "16", "--float"]) == 0
    assert "heatmap of 57 x 40 cells of 16 px, bands background, bright" in capsys.readouterr().out
    with rasterio.open(out) as src:
        assert src.descriptions == ("background", "bright") and src.res == (160.0, 160.0)
        np.testing.assert_allclose(src.read(2), heat, equal_nan=True)
    assert main(["scan", str(scene), "--model", model, "--out", str(tmp_path / "h.tif"), "--stride", "24"]) == 1
    assert "--stride 24 is out of range: must divide the classifier's window of 64 px" in capsys.readouterr().err
    assert main(["scan", str(scene), "--model", model, "--out", str(tmp_path / "h.gpkg")]) == 1
    assert "a classifier writes a heatmap: give a .tif" in capsys.readouterr().err
    detector = str(save_square_detector(tmp_path / "squares.onnx"))
    assert main(["scan", str(scene), "--model", detector, "--out", str(tmp_path / "d.tif")]) == 1
    assert "a detector writes boxes" in capsys.readouterr().err


def test_regions_are_the_connected_areas_above_the_threshold_with_their_statistics(tmp_path, capsys):
    import json

    import shapely

    from minescan import Scanner
    from minescan.cli import main
    from minescan.synthetic.scene import SceneSpec, write_scene
    from testkit.bright_classifier import save_bright_classifier

    model = str(save_bright_classifier(tmp_path / "bright.onnx", size=64))
    scene = tmp_path / "scene.tif"
    truth = write_scene(scene, SceneSpec(width=900, height=640, objects=12, seed=4))
    result = Scanner(model).scan(scene, stride=16)
    regions = result.regions(0.02, classes=[2])  # the smallest square (8 px) fills 1.6 % of a 64 px window: p 0.06
    assert len(regions) >= 1 and set(regions.fields["class_label"]) == {"bright"}
    assert np.all(regions.fields["max_probability"] >= 0.02) and np.all(regions.fields["mean_probability"] <= regions.fields["max_probability"])
    # the cell count times the cell area is the polygon's area (160 m cells), and every bright square lies in a region
    np.testing.assert_allclose(regions.fields["area"], regions.fields["cells"] * 160.0 * 160.0)
    t = result.transform
    centres = shapely.points([(t.c + (x0 + x1) / 2 * t.a, t.f + (y0 + y1) / 2 * t.e) for x0, y0, x1, y1 in truth.boxes])
    union = shapely.union_all(regions.polygons)
    assert shapely.contains(union, centres).all()
    out = tmp_path / "regions.geojson"
    assert main(["scan", str(scene), "--model", model, "--out", str(tmp_path / "h.tif"), "--stride", "16",
                 "--regions", str(out), "--threshold", "0.3"]) == 0
    assert "regions at probability >= 0.3" in capsys.readouterr().out
    collection = json.loads(out.read_text())
    # the background class (class 1 of a softmax model) is not a finding: only "bright" areas become regions
    assert {f["properties"]["class_label"] for f in collection["features"]} == {"bright"}
    assert collection["minescan"]["threshold"] == 0.3
    assert main(["scan", str(scene), "--model", model, "--out", str(tmp_path / "h2.tif"), "--regions", str(out),
                 "--threshold", "1.5"]) == 1


def test_a_run_of_a_classifier_writes_one_heatmap_per_scene_and_resumes(tmp_path, capsys):
    import json

    from minescan.cli import main
    from minescan.synthetic.scene import SceneSpec, write_scene
    from testkit.bright_classifier import save_bright_classifier

    model = str(save_bright_classifier(tmp_path / "bright.onnx", size=64))
    scenes = [tmp_path / "a.tif", tmp_path / "b.tif"]
    for seed, scene in enumerate(scenes):
        write_scene(scene, SceneSpec(width=600, height=500, objects=5, seed=seed))
    argv = ["scan", *map(str, scenes), "--model", model, "--out-dir", str(tmp_path / "run"), "--stride", "32"]
    assert main(argv) == 0
    summary = json.loads((tmp_path / "run" / "run_summary.json").read_text())
    assert summary["totals"]["done"] == 2 and summary["totals"]["failed"] == 0
    for name in ("a", "b"):
        with rasterio.open(tmp_path / "run" / f"{name}.tif") as src:
            assert src.descriptions == ("background", "bright") and src.res == (320.0, 320.0)
        assert (tmp_path / "run" / f"{name}.png").stat().st_size > 0  # the heatmap's quicklook beside it
    assert main(argv) == 0 and capsys.readouterr().out.count("done in an earlier run") == 2


def test_the_heatmap_reaches_the_api_as_arrays_xarray_a_quicklook_and_tagged_cog(tmp_path, capsys):
    from minescan import Scanner
    from minescan.cli import main
    from minescan.results.heatmap import read_heatmap
    from minescan.synthetic.scene import SceneSpec, write_scene
    from testkit.bright_classifier import save_bright_classifier

    model = str(save_bright_classifier(tmp_path / "bright.onnx", size=64))
    scene = tmp_path / "scene.tif"
    truth = write_scene(scene, SceneSpec(width=900, height=640, objects=12, seed=4, nodata_width=60))
    result = Scanner(model).scan(scene, stride=16)
    # the foreground class by default ("bright", class 2 of a softmax model), any class by its label
    assert result.class_id() == 2 and result.window == 64
    np.testing.assert_array_equal(result.probability(), result.probabilities[1])
    with pytest.raises(Exception, match="'mining' is not in the heatmap; its classes are background, bright"):
        result.probability("mining")
    # xarray: values as they are, cell-centre coordinates on the map
    da = result.to_xarray()
    assert da.dims == ("band", "y", "x") and list(da.band.values) == ["background", "bright"]
    t = result.transform
    x0, y0, x1, y1 = truth.boxes[0]
    cx, cy = t.c + (x0 + x1) / 2 * t.a, t.f + (y0 + y1) / 2 * t.e
    picked = float(da.sel(band="bright").sel(x=cx, y=cy, method="nearest"))
    assert picked == pytest.approx(float(result.probabilities[1][int((y0 + y1) / 2) // 16, int((x0 + x1) / 2) // 16]))
    assert da.attrs["stride"] == 16 and "UTM" in da.attrs["crs"] or "32" in da.attrs["crs"]
    # the COG carries the scan's facts
    out = tmp_path / "heat.tif"
    result.write(out)
    back = read_heatmap(out)
    assert back.labels == ("background", "bright") and back.tags["window"] == 64 and back.tags["stride"] == 16
    assert back.tags["model"] == "bright.onnx" and back.tags["reliable"] is True
    np.testing.assert_allclose(back.probabilities, result.probabilities, atol=0.5 / 254 + 1e-6, equal_nan=True)
    # the quicklook: red-ish over a bright square, grey (equal channels) where nothing was found, the scene's size
    png = result.write_quicklook(tmp_path / "heat.png", max_size=450)
    with rasterio.open(png) as src:  # GDAL reads PNG
        image = np.moveaxis(src.read(), 0, -1)
    assert image.shape[0] >= 320 and image.shape[1] > 450  # the map, and the legend panel at its right
    image = image[:320, :450]
    scale = 450 / 900
    strongest = max(truth.boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
    r, g, b = image[int((strongest[1] + strongest[3]) / 2 * scale), int((strongest[0] + strongest[2]) / 2 * scale)].astype(int)
    assert r > 150 and r > b + 60
    quiet = np.isclose(np.nan_to_num(result.probabilities[1], nan=0.0), 0.0)
    row, col = np.argwhere(quiet)[len(np.argwhere(quiet)) // 2]
    pixel = image[int((row + 0.5) * 16 * scale), int((col + 0.5) * 16 * scale)].astype(int)
    assert max(pixel) - min(pixel) <= 0.35 * 255  # mostly grey: only the map is in colour
    # the command line: --quicklook beside the heatmap
    assert main(["scan", str(scene), "--model", model, "--out", str(tmp_path / "h.tif"), "--stride", "16",
                 "--quicklook", str(tmp_path / "q.png")]) == 0
    assert "quicklook of bright" in capsys.readouterr().out and (tmp_path / "q.png").stat().st_size > 0


def test_serve_refuses_a_classifier_with_one_line_before_listening(tmp_path, capsys):
    pytest.importorskip("starlette")
    from minescan.cli import main
    from testkit.bright_classifier import save_bright_classifier

    model = save_bright_classifier(tmp_path / "bright.onnx", size=64)
    assert main(["serve", "--model", f"heat={model}", "--port", "0", "--state", str(tmp_path / "state")]) == 1
    err = capsys.readouterr().err
    assert "model 'heat'" in err and "is a tile classifier; minescan serve serves detectors" in err


def test_a_model_whose_metadata_contradicts_its_graph_is_refused_with_one_line(tmp_path):
    import onnx

    from minescan.engine import load_detector
    from minescan.export.onnx_metadata import read_metadata, write_metadata
    from minescan.model.metadata import MetadataError
    from testkit.bright_classifier import build_bright_classifier

    model = build_bright_classifier(size=64)
    import dataclasses

    write_metadata(model, dataclasses.replace(read_metadata(model), task="detector"))
    path = tmp_path / "liar.onnx"
    onnx.save(model, str(path))
    with pytest.raises(MetadataError, match="says detector but the graph's outputs make it a classifier"):
        load_detector(path)
