"""New scenes without silent failure: normalisation recipes, the domain-shift guard, evaluate --robustness.

The scenes are the known-answer ones (bright squares on a Sentinel-2-like
background); "haze" is the issue's DN x 0.8 + 600, written as a real GeoTIFF
by the robustness module's own writer.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnx
import pyogrio
import pytest
import rasterio

from minescan import Scanner
from minescan.cli import main
from minescan.export.calibration import histogram_reference, input_statistics
from minescan.export.onnx_metadata import write_metadata
from minescan.model.metadata import MetadataError, ModelMetadata, Normalisation, Recipe, metadata_props, parse_metadata
from minescan.raster.radiometry import Radiometry, histogram_match, standardize
from minescan.results.read import scan_metadata
from minescan.robustness.perturbations import STANDARD, make, perturb_values
from minescan.robustness.report import write_perturbed
from minescan.model.detections import SceneDetections
from minescan.results.writers import write_detections
from testkit.square_detector import LABELS, build_square_detector

HAZE = make("haze", 0.8, 0.06)


def _model(path, **meta) -> str:
    proto = build_square_detector()
    write_metadata(proto, ModelMetadata(labels=LABELS, **meta))
    onnx.save(proto, str(path))
    return str(path)


@pytest.fixture
def scenes(make_scene, tmp_path):
    """A clear scene, its hazy copy and its truth (GeoJSON)."""
    clear, truth = make_scene(width=1024, height=768, objects=12, seed=3)
    hazy = write_perturbed(clear, tmp_path / "hazy.tif", HAZE, scale=10000)
    truth_path = tmp_path / "truth.geojson"
    with rasterio.open(clear) as src:
        write_detections(truth_path, SceneDetections(truth.boxes, np.ones(len(truth.classes)), truth.classes),
                         transform=src.transform, crs=src.crs, labels=LABELS, scene="scene.tif")
    return clear, hazy, truth, truth_path


def _found(result, truth) -> int:
    """Truth objects found exactly (the known-answer detector places boxes to the pixel)."""
    boxes = {tuple(b) for b in np.round(result.detections.boxes).astype(int).tolist()}
    return sum(tuple(b) in boxes for b in truth.boxes.astype(int).tolist())


def test_a_stretch_model_finds_the_same_objects_in_a_darker_or_hazy_scene_where_a_fixed_gain_model_goes_blind(scenes, tmp_path):
    clear, hazy, truth, _ = scenes
    darker = write_perturbed(clear, tmp_path / "darker.tif", make("brightness", 0.7), scale=10000)
    fixed = Scanner(_model(tmp_path / "fixed.onnx", recipe=Recipe(bands=(3, 2, 1))))
    stretch = Scanner(_model(tmp_path / "stretch.onnx", recipe=Recipe(bands=(3, 2, 1), normalisation=Normalisation("stretch", 0.5, 99.5))))
    assert _found(fixed.scan(clear), truth) == len(truth.boxes)
    assert _found(fixed.scan(darker), truth) == 0  # x0.7 drops every square under the detector's threshold
    results = [stretch.scan(path) for path in (clear, darker, hazy)]
    assert "percentile stretch 0.5-99.5 % over the scene, as the model was trained [model]" in results[0].plan.rendering
    assert [_found(r, truth) for r in results] == [len(truth.boxes)] * 3
    for other in results[1:]:
        np.testing.assert_array_equal(results[0].detections.boxes, other.detections.boxes)
    # --stretch (an option) and --gain override the model's normalisation
    assert "[option]" in stretch.plan(clear, stretch=(2, 98)).rendering
    assert stretch.plan(clear, gain=2.5).rendering.startswith("clip(")


def test_the_guard_flags_a_hazy_scene_everywhere_a_user_looks_and_never_the_clear_one(scenes, tmp_path, capsys):
    clear, hazy, truth, _ = scenes
    calibration = tmp_path / "calibration"
    calibration.mkdir()
    (calibration / "clear.tif").write_bytes(clear.read_bytes())
    recipe = Recipe(bands=(3, 2, 1))
    model = _model(tmp_path / "guarded.onnx", recipe=recipe, input_statistics=input_statistics(calibration, recipe))
    scanner = Scanner(model)
    ok, bad = scanner.scan(clear), scanner.scan(hazy)
    assert ok.reliable and ok.input_shift < 0.05 and ok.warning() is None
    assert not bad.reliable and bad.input_shift > 1.0
    assert "BEYOND the threshold 0.5 [default]" in bad.plan.explain()
    assert bad.to_geojson()["minescan"]["reliable"] is False
    # the command line: a warning on stderr, the flag in the summary line and in every result format that can hold it
    for suffix in (".gpkg", ".geojson", ".fgb"):
        out = tmp_path / f"hazy{suffix}"
        assert main(["scan", str(hazy), "--model", model, "--out", str(out)]) == 0
        captured = capsys.readouterr()
        assert "minescan: warning: hazy.tif: input shift" in captured.err and "UNRELIABLE" in captured.err
        assert "FLAGGED as unreliable" in captured.out
        meta = scan_metadata(out)
        assert meta["reliable"] is False and meta["input_shift"] == pytest.approx(bad.input_shift)
    assert main(["scan", str(clear), "--model", model, "--out", str(tmp_path / "clear.gpkg")]) == 0
    assert "warning" not in capsys.readouterr().err and scan_metadata(tmp_path / "clear.gpkg")["reliable"] is True
    # a stricter or looser threshold is the user's call
    assert scanner.scan(hazy, shift_threshold=50).reliable
    # a run: the summary counts and lists the flagged scene, and a resumed run still knows
    for attempt in range(2):
        assert main(["scan", str(clear), str(hazy), "--model", model, "--out-dir", str(tmp_path / "run")]) == 0
        summary = json.loads((tmp_path / "run" / "run_summary.json").read_text())
        assert summary["totals"]["flagged"] == 1
        shifts = {s["product_id"]: s["outcome"]["input_shift"] for s in summary["scenes"]}
        assert shifts["hazy"] > 1.0 and shifts["scene"] < 0.05
        assert "## Flagged" in (tmp_path / "run" / "run_summary.md").read_text()
    assert "done in an earlier run" in capsys.readouterr().out


def test_a_model_without_statistics_says_the_guard_is_off(scenes, tmp_path):
    clear, *_ = scenes
    result = Scanner(_model(tmp_path / "plain.onnx")).scan(clear)
    assert result.input_shift is None and result.reliable
    assert "not measured" in result.plan.explain()


def test_standardize_and_histogram_match_hit_their_targets_through_tables_and_formula():
    rng = np.random.default_rng(0)
    dn = rng.gamma(4.0, 300.0, (3, 200, 200)).astype(np.uint16) + 1
    valid = np.ones(dn.shape[1:], bool)
    rgb = standardize(dn, valid, 110, 40).apply(dn)
    assert np.allclose(rgb.reshape(-1, 3).mean(0), 110, atol=3) and np.allclose(rgb.reshape(-1, 3).std(0), 40, atol=3)
    percentiles = (5.0, 50.0, 95.0)
    reference = ((20.0, 90.0, 200.0), (30.0, 100.0, 210.0), (10.0, 80.0, 190.0))
    radiometry = histogram_match(dn, valid, percentiles, reference)
    table, formula = radiometry.apply(dn), radiometry.apply(dn.astype(np.float32))
    np.testing.assert_array_equal(table, formula)  # the uint16 tables and the float formula agree to the level
    got = np.percentile(table.reshape(-1, 3), percentiles, axis=0).T
    assert np.allclose(got, reference, atol=2)
    # monotone: a brighter value never renders darker
    assert all(np.all(np.diff(r.apply(np.arange(0, 8000, 7, dtype=np.uint16)[None, None, :].repeat(3, 0))[0], axis=0) >= 0)
               for r in (radiometry,))
    assert isinstance(radiometry, Radiometry) and radiometry.curves is not None


def test_histogram_match_export_reference_maps_a_hazy_scene_back(scenes, tmp_path):
    clear, hazy, *_ = scenes
    folder = tmp_path / "cal"
    folder.mkdir()
    (folder / "clear.tif").write_bytes(clear.read_bytes())
    recipe = Recipe(bands=(3, 2, 1), normalisation=histogram_reference(folder, Recipe(bands=(3, 2, 1))))
    statistics = input_statistics(folder, Recipe(bands=(3, 2, 1)))
    scanner = Scanner(_model(tmp_path / "matched.onnx", recipe=recipe, input_statistics=statistics))
    assert scanner.scan(clear).input_shift < 0.1 and scanner.scan(hazy).input_shift < 0.1


@pytest.mark.parametrize("raw, message", [
    ({"kind": "stretch", "low": 60, "high": 40}, "percentiles must satisfy 0 <= low < high <= 100"),
    ({"kind": "contrast"}, "'kind' one of gain, stretch, standardize, histogram_match"),
    ({"kind": "standardize", "mean": 110, "std": 0}, "'std' positive"),
    ({"kind": "histogram_match", "percentiles": [5, 50], "reference": [[10, 5]]}, "non-decreasing"),
])
def test_a_bad_normalisation_in_a_model_is_one_line_naming_it(raw, message):
    props = {"minescan.preprocessing": json.dumps({"bands": None, "gain": 2.5, "offset": 0, "scale": 10000, "normalisation": raw})}
    with pytest.raises(MetadataError, match="'minescan.preprocessing': 'normalisation'") as caught:
        parse_metadata(props)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_normalisation_and_statistics_survive_the_model_file(scenes, tmp_path):
    clear, *_ = scenes
    folder = tmp_path / "c"
    folder.mkdir()
    (folder / "a.tif").write_bytes(clear.read_bytes())
    meta = ModelMetadata(labels=LABELS, recipe=Recipe(normalisation=Normalisation("standardize", mean=100, std=30)),
                         input_statistics=input_statistics(folder, Recipe(bands=(3, 2, 1))))
    assert parse_metadata(metadata_props(meta)) == meta
    broken = dict(metadata_props(meta), **{"minescan.input_statistics": json.dumps({"percentiles": [50, 10]})})
    with pytest.raises(MetadataError, match="'minescan.input_statistics': 'percentiles' must be rising"):
        parse_metadata(broken)


@pytest.mark.parametrize("name, perturbation", [(n, p) for n, p in STANDARD if p.halo])
def test_a_scene_perturbed_strip_by_strip_equals_the_scene_perturbed_whole(name, perturbation, make_scene, tmp_path):
    path, _ = make_scene(width=700, height=1100, objects=5, seed=1, nodata_width=40)
    out = write_perturbed(path, tmp_path / "p.tif", perturbation, scale=10000, seed=4)
    with rasterio.open(path) as src, rasterio.open(out) as dst:
        data, written = src.read(), dst.read()
        assert (dst.crs, dst.transform, dst.nodata, dst.dtypes) == (src.crs, src.transform, src.nodata, src.dtypes)
    invalid = (data == 0).all(axis=0)
    whole = perturb_values(data, invalid, perturbation, scale=10000, nodata=0, seed=4)
    np.testing.assert_array_equal(written, whole)
    np.testing.assert_array_equal(written[:, invalid], data[:, invalid])  # nodata stays nodata
    assert not (written[:, ~invalid] == 0).all(axis=0).any()  # and no valid pixel becomes nodata
    assert not np.array_equal(written, data)


def test_evaluate_robustness_prints_the_table_and_refuses_bad_usage(scenes, tmp_path, capsys):
    clear, _, _, truth_path = scenes
    model = _model(tmp_path / "m.onnx", recipe=Recipe(bands=(3, 2, 1)))
    assert main(["evaluate", "--robustness", "--model", model, str(clear), str(truth_path),
                 "--perturbations", "haze,jpeg"]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = [line for line in out if line.startswith("| ") and "---" not in line]
    assert rows[0].startswith("| perturbation | strength | red_square P / R / AP | blue_square P / R / AP |")
    assert [r.split(" | ")[0] for r in rows[1:]] == ["| clear", "| haze", "| haze", "| haze", "| jpeg", "| jpeg"]
    assert rows[1].split(" | ")[2].split(" / ")[1] == "1.000"  # clear: every square found
    assert rows[3].split(" | ")[1] == "x0.8 + 0.06"
    assert main(["evaluate", "--robustness", "--model", model, str(clear)]) == 1
    assert "SCENE TRUTH pairs" in capsys.readouterr().err
    assert main(["evaluate", "--robustness", "--model", model, str(clear), str(truth_path), "--perturbations", "fog"]) == 1
    assert "unknown perturbation 'fog'" in capsys.readouterr().err


def test_statistics_come_from_a_sample_of_blocks_not_the_whole_scene(make_scene):
    from minescan.raster.sources.source import Source

    path, _ = make_scene(width=1536, height=1024, objects=3)
    with Source(str(path), "raster", path, path.stem).open(bands=(3, 2, 1)) as scene:
        sample = scene.statistics_sample(windows=9, window_size=128)
    assert sample.data.shape == (3, 128, 9 * 128) and sample.nodata.shape == (128, 9 * 128)
    with rasterio.open(path) as src:
        full = src.read((3, 2, 1))
    places = []
    for k in range(9):  # each window of the sample is a window of the scene, and they spread over all of it
        chunk = sample.data[:, :, k * 128 : (k + 1) * 128]
        rows, cols = np.nonzero(full[0, : 1024 - 127, : 1536 - 127] == chunk[0, 0, 0])
        found = [(r, c) for r, c in zip(rows, cols) if np.array_equal(full[:, r : r + 128, c : c + 128], chunk)]
        assert found, f"window {k} is not a window of the scene"
        places.append(found[0])
    assert len(set(places)) == 9
    assert {r < 512 for r, _ in places} == {c < 768 for _, c in places} == {True, False}  # top and bottom, left and right


def test_export_completes_an_onnx_from_elsewhere_with_normalisation_and_statistics(scenes, tmp_path, capsys):
    clear, hazy, *_ = scenes
    bare = tmp_path / "bare.onnx"
    onnx.save(build_square_detector(), str(bare))  # no minescan metadata at all
    calibration = tmp_path / "cal"
    calibration.mkdir()
    (calibration / "clear.tif").write_bytes(clear.read_bytes())
    out = tmp_path / "ready.onnx"
    assert main(["export", str(bare), "--out", str(out), "--bands", "3,2,1", "--normalisation", "stretch", "--stretch", "1,99",
                 "--calibration", str(calibration), "--labels", "red,blue"]) == 0
    assert "the graph is unchanged" in capsys.readouterr().out
    written = onnx.load(str(out))
    assert written.graph == onnx.load(str(bare)).graph
    meta = parse_metadata({p.key: p.value for p in written.metadata_props})
    assert meta.recipe.bands == (3, 2, 1) and meta.recipe.normalisation == Normalisation("stretch", 1.0, 99.0)
    assert meta.labels == {1: "red", 2: "blue"} and meta.input_statistics.pixels > 0
    # a second pass keeps what the model records and changes only what is asked
    again = tmp_path / "again.onnx"
    assert main(["export", str(out), "--out", str(again), "--drop-parts", "0.7"]) == 0
    kept = parse_metadata({p.key: p.value for p in onnx.load(str(again)).metadata_props})
    assert dataclasses.replace(kept, postprocessing=meta.postprocessing) == meta and kept.postprocessing.drop_parts == 0.7
    scanner = Scanner(str(out))
    assert scanner.scan(clear).reliable and scanner.scan(hazy).reliable  # the stretch undoes the haze
    assert main(["export", str(bare), "--out", str(tmp_path / "x.onnx"), "--normalisation", "histogram_match"]) == 1
    assert "takes its reference from --calibration DIR" in capsys.readouterr().err


def test_a_uint8_rgb_scene_is_normalised_too_under_a_stretch_model(scenes, tmp_path):
    clear, _, truth, _ = scenes
    from minescan.raster.radiometry import reflectance_gain

    with rasterio.open(clear) as src:  # an already rendered RGB product, as many exports are
        rgb = reflectance_gain(3).apply(src.read((3, 2, 1)))
        profile = dict(driver="GTiff", width=src.width, height=src.height, count=3, dtype="uint8", crs=src.crs,
                       transform=src.transform)
    rgb_path = tmp_path / "rgb.tif"
    with rasterio.open(rgb_path, "w", **profile) as dst:
        dst.write(np.moveaxis(rgb, -1, 0))
    hazy = write_perturbed(rgb_path, tmp_path / "rgb_hazy.tif", HAZE, scale=255)
    stretch = Scanner(_model(tmp_path / "s.onnx", recipe=Recipe(normalisation=Normalisation("stretch", 0.5, 99.5))))
    a, b = stretch.scan(rgb_path), stretch.scan(hazy)
    assert "percentile stretch" in a.plan.rendering and _found(a, truth) == _found(b, truth) == len(truth.boxes)
    assert "used as it is" in Scanner(_model(tmp_path / "g.onnx")).plan(rgb_path).rendering  # the fixed gain: as before
