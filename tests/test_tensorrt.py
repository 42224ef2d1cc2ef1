"""TensorRT: engine sidecars, build profiles, the CUDA runtime's errors, and (with a GPU) build + run.

The first part is plain Python and runs everywhere: it checks how a stale or
foreign engine is refused, using a sidecar and stand-in engine bytes (no
TensorRT runs), how the build profile is chosen, and what a machine without
TensorRT or a GPU says.  The last part builds and runs real engines; it skips,
with the reason, wherever TensorRT or a CUDA GPU is missing.
"""

import os
import shutil
import subprocess
from dataclasses import replace

import numpy as np
import pytest

from minescan.engine.engine_sidecar import (
    BuildTarget,
    EngineMismatchError,
    EngineSidecar,
    Profile,
    check_engine,
    read_sidecar,
    sha256_file,
    sidecar_path,
)
from minescan.export.build_profile import parse_batch, plan_profile
from minescan.export.errors import ExportError

HERE = BuildTarget(tensorrt_version="10.13.0.35", gpu_name="NVIDIA H100 80GB HBM3", compute_capability="9.0")
PROFILE = Profile("input_tensor", (1, 640, 640, 3), (1, 640, 640, 3), (1, 640, 640, 3), note="batch fixed at 1")


@pytest.fixture
def engine(tmp_path):
    """Stand-in engine bytes with a sidecar vouching for them (nothing here is a real TensorRT engine)."""
    path = tmp_path / "model.engine"
    path.write_bytes(b"stand-in for a serialized engine")
    sidecar = EngineSidecar(sha256_file(path), HERE, "0" * 64, PROFILE, {"minescan.labels": '{"1": "mine"}'})
    sidecar_path(path).write_text(sidecar.to_json())
    return path


def test_sidecar_round_trips_and_accepts_its_engine(engine):
    sidecar = read_sidecar(engine)
    assert sidecar_path(engine).name == "model.engine.json"
    assert sidecar.profile == PROFILE and sidecar.target == HERE and sidecar.metadata == {"minescan.labels": '{"1": "mine"}'}
    check_engine(engine, sidecar, HERE)


@pytest.mark.parametrize(
    "here, message",
    [
        (replace(HERE, tensorrt_version="10.14.1.48"), "built with TensorRT 10.13.0.35, this machine has TensorRT 10.14.1.48"),
        (replace(HERE, gpu_name="NVIDIA L4"), "built with GPU NVIDIA H100 80GB HBM3, this machine has GPU NVIDIA L4"),
        (replace(HERE, compute_capability="8.9"), "built with compute capability 9.0, this machine has compute capability 8.9"),
    ],
)
def test_foreign_engine_is_refused_naming_the_mismatch(engine, here, message):
    with pytest.raises(EngineMismatchError) as caught:
        check_engine(engine, read_sidecar(engine), here)
    assert message in str(caught.value) and str(caught.value).endswith("rebuild with minescan build")
    assert "\n" not in str(caught.value)


def test_engine_replaced_after_its_sidecar_is_refused(engine):
    engine.write_bytes(b"another engine")
    with pytest.raises(EngineMismatchError, match="SHA-256 .* is not the .* its sidecar was written for.*rebuild with minescan build"):
        check_engine(engine, read_sidecar(engine), HERE)


def test_engine_without_sidecar_is_refused(engine):
    sidecar_path(engine).unlink()
    with pytest.raises(EngineMismatchError, match="no sidecar model.engine.json beside it.*rebuild with minescan build"):
        read_sidecar(engine)


@pytest.mark.parametrize(
    "text, message",
    [
        ("not json", "not a minescan engine sidecar"),
        ('{"format": "something-else/1"}', "format 'something-else/1' is not"),
        ('{"format": "minescan-tensorrt-engine/1"}', "not a minescan engine sidecar \\(KeyError"),
        ("[1, 2]", "not a minescan engine sidecar \\(AttributeError"),
    ],
)
def test_unreadable_sidecar_is_refused(engine, text, message):
    sidecar_path(engine).write_text(text)
    with pytest.raises(EngineMismatchError, match=message):
        read_sidecar(engine)


def test_batch_ranges():
    assert parse_batch("1:8:16") == (1, 8, 16)
    for bad in ("8", "1:8", "0:1:2", "4:2:8", "a:b:c"):
        with pytest.raises(ExportError, match="MIN:OPT:MAX"):
            parse_batch(bad)


def test_profile_keeps_a_fixed_batch_of_one_and_says_why():
    profile = plan_profile("input_tensor", (1, 640, 640, 3), (1, 8, 16), None, "m.onnx")
    assert profile.min == profile.opt == profile.max == (1, 640, 640, 3)
    assert "fixed at 1 (TF Object Detection API graphs process only image 0): profile 1:1:1 instead of 1:8:16" in profile.note


def test_profile_of_a_dynamic_graph_takes_the_batch_range_and_pins_the_size():
    profile = plan_profile("input_tensor", (-1, -1, -1, 3), (2, 8, 16), (512, 384), "m.onnx")
    assert (profile.min, profile.opt, profile.max) == ((2, 512, 384, 3), (8, 512, 384, 3), (16, 512, 384, 3))
    assert profile.note == ""


def test_profile_needs_a_tile_size_for_a_graph_that_leaves_it_open():
    with pytest.raises(ExportError, match="run-time height .* pass --size HEIGHTxWIDTH"):
        plan_profile("input_tensor", (-1, -1, -1, 3), (1, 8, 16), None, "m.onnx")
    with pytest.raises(ExportError, match="fixed width of 640 px, not the 512 asked for"):
        plan_profile("input_tensor", (1, 640, 640, 3), (1, 1, 1), (640, 512), "m.onnx")


def test_build_command_without_tensorrt_is_one_clear_line(square_model, tmp_path):
    import argparse

    from minescan.engine.backends import TensorRTUnavailableError
    from minescan.cli.build import add_build_parser

    parser = argparse.ArgumentParser()
    add_build_parser(parser.add_subparsers())
    args = parser.parse_args(["build", str(square_model), "--out", str(tmp_path / "m.engine"), "--batch", "1:2:4"])
    try:
        import minescan.engine.tensorrt_common  # noqa: F401
    except TensorRTUnavailableError:
        pass
    else:
        pytest.skip("TensorRT is installed here")
    with pytest.raises(TensorRTUnavailableError) as caught:
        args.handler(args)
    assert "TensorRT is not available" in str(caught.value) and "\n" not in str(caught.value)
    assert not (tmp_path / "m.engine").exists()


def test_cuda_errors_name_the_call():
    runtime = pytest.importorskip("cuda.bindings.runtime", reason="cuda-python (the 'gpu' extra) is not installed")
    from minescan.engine.cuda_runtime import CudaError, check

    assert check((runtime.cudaError_t.cudaSuccess, 42), "cudaFoo") == 42
    with pytest.raises(CudaError, match="cudaMalloc\\(x, 8 bytes\\) failed: cudaErrorMemoryAllocation"):
        check((runtime.cudaError_t.cudaErrorMemoryAllocation, 0), "cudaMalloc(x, 8 bytes)")


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has an NVIDIA driver")
def test_no_gpu_is_one_clear_line():
    from minescan.engine.cuda_runtime import CudaUnavailableError, DeviceArena, gpu_info

    for attempt in (gpu_info, DeviceArena):
        with pytest.raises(CudaUnavailableError) as caught:
            attempt()
        assert "\n" not in str(caught.value)
        assert "cuda-python is not installed" in str(caught.value) or "no usable CUDA GPU" in str(caught.value)


# --- with TensorRT and a GPU -------------------------------------------------------------------


def gpu_required() -> str | None:
    """Why this machine must run the GPU tests (None: they may skip).

    ``MINESCAN_REQUIRE_GPU=1`` demands them; an NVIDIA driver that answers (``nvidia-smi -L``) means a GPU is
    here, so TensorRT code that reports itself unavailable is a failure, not a reason to skip.
    """
    if os.environ.get("MINESCAN_REQUIRE_GPU") == "1":
        return "MINESCAN_REQUIRE_GPU=1"
    smi = shutil.which("nvidia-smi")
    if smi and subprocess.run([smi, "-L"], capture_output=True, timeout=30).returncode == 0:
        return "nvidia-smi lists a GPU"
    return None


def skip_or_fail(reason: str, *, package_missing: bool) -> None:
    """Skip with ``reason`` where the GPU tests may skip; fail where they must run.

    A missing TensorRT *package* on a machine with a driver still skips unless the variable demands the
    tests (the lent GPU machines have no TensorRT); minescan's own code saying TensorRT or CUDA is
    unusable where a GPU answers fails, so a broken import cannot read as a skip.
    """
    required = gpu_required()
    if required and (not package_missing or required.startswith("MINESCAN_REQUIRE_GPU")):
        pytest.fail(f"{reason} (GPU tests required: {required})")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def gpu():
    """This machine's GPU, or a skip (or failure, see :func:`skip_or_fail`) saying what is missing."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        skip_or_fail("TensorRT is not installed (NVIDIA's wheels, the 'gpu' extra)", package_missing=True)
    from minescan.engine.backends import TensorRTUnavailableError
    from minescan.engine.cuda_runtime import CudaUnavailableError, gpu_info

    try:
        import minescan.engine.tensorrt_common  # noqa: F401

        return gpu_info()
    except (TensorRTUnavailableError, CudaUnavailableError) as exc:
        skip_or_fail(str(exc), package_missing=False)


def test_the_gpu_tests_fail_instead_of_skipping_when_demanded(monkeypatch):
    monkeypatch.setenv("MINESCAN_REQUIRE_GPU", "1")
    with pytest.raises(pytest.fail.Exception, match="GPU tests required: MINESCAN_REQUIRE_GPU=1"):
        skip_or_fail("TensorRT is not installed", package_missing=True)
    monkeypatch.delenv("MINESCAN_REQUIRE_GPU")
    if gpu_required() is None:
        with pytest.raises(pytest.skip.Exception):
            skip_or_fail("TensorRT is not installed", package_missing=True)


def _tiles(n: int, size: int = 96) -> np.ndarray:
    tiles = np.zeros((n, size, size, 3), np.uint8)
    for i in range(n):
        tiles[i, 5 + 7 * i : 20 + 7 * i, 10:40] = (240, 190, 120)
    return tiles


@pytest.mark.parametrize("model, batch", [("square_model", (1, 4, 8)), ("od_api_like_model", (1, 1, 1))])
def test_engine_matches_onnxruntime(gpu, request, tmp_path, model, batch):
    from minescan.engine import load_detector
    from minescan.export.build import build_engine

    onnx_path = request.getfixturevalue(model)
    report = build_engine(onnx_path, tmp_path / "m.engine", batch=(1, 4, 8), size=(96, 96), timing_cache=tmp_path / "cache")
    assert (report.sidecar.profile.min[0], report.sidecar.profile.max[0]) == (batch[0], batch[2])
    assert report.sidecar.target.gpu_name == gpu.name and (tmp_path / "cache").stat().st_size > 0
    engine = load_detector(tmp_path / "m.engine", backend="auto")
    assert engine.backend == "tensorrt" and engine.signature.height == 96
    reference = load_detector(onnx_path).detect(_tiles(5), 0.5)
    for got, want in zip(engine.detect(_tiles(5), 0.5), reference, strict=True):
        np.testing.assert_allclose(got.boxes, want.boxes, atol=1e-3)
        assert got.classes.tolist() == want.classes.tolist()


def test_real_engine_with_a_tampered_sidecar_is_refused(gpu, square_model, tmp_path):
    from minescan.engine import load_detector
    from minescan.export.build import build_engine

    build_engine(square_model, tmp_path / "m.engine", batch=(1, 1, 2), size=(96, 96))
    sidecar = read_sidecar(tmp_path / "m.engine")
    stale = replace(sidecar, target=replace(sidecar.target, tensorrt_version="0.0.0"))
    sidecar_path(tmp_path / "m.engine").write_text(stale.to_json())
    with pytest.raises(EngineMismatchError, match="built with TensorRT 0.0.0"):
        load_detector(tmp_path / "m.engine", backend="tensorrt")
