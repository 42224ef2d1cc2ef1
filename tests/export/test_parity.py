"""TF (the SavedModel) against ONNX Runtime (its export) on the tiny fixture."""

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="export tests need the export extra (tensorflow-cpu)")
pytest.importorskip("tf2onnx", reason="export tests need the export extra (tf2onnx)")

from minescan.export import ExportError, compare_detections, run_onnx, run_saved_model, synthetic_tiles, verify_export  # noqa: E402


def test_export_matches_tensorflow_on_synthetic_tiles(saved_model_dir, exported):
    # Floor 0: every one of the 100 detections per tile, down to scores near 0.005, must match.
    report = verify_export(saved_model_dir, exported.onnx_path, tile_count=4, seed=0, score_floor=0.0)
    assert report.passed, report.format()
    assert report.tiles == 4
    assert report.compared == 400
    assert report.matched == report.compared
    assert report.class_mismatches == 0 and report.unmatched_candidates == 0
    assert report.max_box_diff < 1e-5
    assert report.max_score_diff < 1e-5
    assert "PASS" in report.format()


def test_caller_tiles_at_another_size(saved_model_dir, exported):
    tiles = synthetic_tiles(2, (192, 192), seed=3)
    reference = run_saved_model(saved_model_dir, tiles)
    candidate = run_onnx(exported.onnx_path, tiles)
    assert reference.boxes.shape == candidate.boxes.shape == (2, 100, 4)
    assert np.array_equal(reference.counts, candidate.counts)
    assert np.array_equal(reference.classes, candidate.classes)  # same detections in the same order
    report = compare_detections(reference, candidate)
    assert report.passed, report.format()


def test_two_onnx_runs_compare_exactly(exported):
    tiles = synthetic_tiles(1, (128, 128), seed=1)
    report = compare_detections(run_onnx(exported.onnx_path, tiles), run_onnx(exported.onnx_path, tiles))
    assert report.passed and report.max_box_diff == 0.0 and report.max_score_diff == 0.0


def test_perturbed_export_fails_verification(saved_model_dir, exported, tmp_path):
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(exported.onnx_path))
    weights = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))  # the box head's fc kernel
    weights.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weights) * 1.05, weights.name))
    onnx.save(model, str(tmp_path / "perturbed.onnx"))
    report = verify_export(saved_model_dir, tmp_path / "perturbed.onnx", tile_count=2)
    assert not report.passed
    assert report.max_score_diff > 1e-3 or report.agreement < 1.0


def test_unloadable_onnx_is_one_line(saved_model_dir, tmp_path):
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    with pytest.raises(ExportError, match=rf"^ONNX Runtime cannot load {tmp_path / 'junk.onnx'}: ") as caught:
        verify_export(saved_model_dir, tmp_path / "junk.onnx")
    assert "\n" not in str(caught.value)
