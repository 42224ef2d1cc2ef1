"""Backend selection: which backend a model file gets, and what is said when auto settles for the CPU.

These run on any machine.  Where onnxruntime-gpu is installed the tests that
need its absence skip; the fallback test simulates the case of onnxruntime-gpu
listing CUDA without CUDA libraries by making ONNX Runtime *list* a provider it
cannot start, and then lets the real ONNX Runtime fall back.
"""

import numpy as np
import onnxruntime as ort
import pytest

from minescan.engine import BackendError, TensorRTUnavailableError, load_detector
from minescan.engine.backends import CPU, CUDA, TENSORRT, check_providers, plan_backend

_CPU_ONLY = [CPU]
_GPU = [TENSORRT, CUDA, CPU]
_HAS_CUDA_PROVIDER = CUDA in ort.get_available_providers()
needs_cpu_only_onnxruntime = pytest.mark.skipif(_HAS_CUDA_PROVIDER, reason="onnxruntime-gpu is installed here")


def test_auto_takes_cuda_when_onnxruntime_offers_it():
    plan = plan_backend("m.onnx", "auto", _GPU)
    assert plan.providers == (CUDA, CPU) and plan.notice is None and not plan.engine


def test_auto_without_a_gpu_package_runs_on_the_cpu_quietly():
    # The default backend, not asked for, on a machine with no GPU package: nothing to say (issue 11).
    plan = plan_backend("m.onnx", "auto", _CPU_ONLY)
    assert plan.providers == (CPU,)
    assert plan.notice is None


@pytest.mark.parametrize("backend, provider", [("cuda", CUDA), ("tensorrt", TENSORRT)])
def test_explicit_gpu_provider_without_onnxruntime_gpu_is_an_error(backend, provider):
    with pytest.raises(BackendError, match=f"backend {backend} needs ONNX Runtime's {provider}.*onnxruntime-gpu"):
        plan_backend("m.onnx", backend, _CPU_ONLY)


def test_explicit_gpu_providers_keep_the_cpu_for_unsupported_nodes():
    assert plan_backend("m.onnx", "cuda", _GPU).providers == (CUDA, CPU)
    assert plan_backend("m.onnx", "tensorrt", _GPU).providers == (TENSORRT, CUDA, CPU)


@pytest.mark.parametrize("backend", ["auto", "tensorrt"])
def test_engine_files_go_to_tensorrt(backend):
    assert plan_backend("model.engine", backend, _CPU_ONLY).engine
    assert plan_backend("model.PLAN", backend, _CPU_ONLY).engine


@pytest.mark.parametrize("backend", ["cpu", "cuda"])
def test_engine_files_refuse_other_backends(backend):
    with pytest.raises(BackendError, match=f"model.engine is a TensorRT engine.*give the .onnx model to run on {backend}"):
        plan_backend("model.engine", backend, _GPU)


def test_unknown_backend():
    with pytest.raises(BackendError, match="unknown backend 'gpu': choose one of auto, cpu, cuda, tensorrt"):
        plan_backend("m.onnx", "gpu", _GPU)


def test_default_backend_is_the_quiet_cpu(square_model):
    detector = load_detector(square_model)
    assert detector.backend == "onnxruntime-cpu" and detector.notice is None


@needs_cpu_only_onnxruntime
def test_load_auto_runs_on_the_cpu_without_a_notice(square_model):
    detector = load_detector(square_model, backend="auto")
    assert detector.backend == "onnxruntime-cpu"
    assert detector.notice is None
    tiles = np.zeros((1, 64, 64, 3), np.uint8)
    tiles[0, 10:30, 10:30] = 250
    assert len(detector.detect(tiles, 0.5)[0]) == 1


@needs_cpu_only_onnxruntime
def test_load_cuda_without_onnxruntime_gpu_is_one_clear_line(square_model):
    with pytest.raises(BackendError) as caught:
        load_detector(square_model, backend="cuda")
    assert "onnxruntime-gpu" in str(caught.value) and "\n" not in str(caught.value)


@needs_cpu_only_onnxruntime
@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider' is not in available provider names")
def test_listed_but_unusable_gpu_provider(square_model, monkeypatch):
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    detector = load_detector(square_model, backend="auto")
    assert detector.backend == "onnxruntime-cpu"
    assert "could not start CUDAExecutionProvider" in detector.notice and "fell back to CPUExecutionProvider" in detector.notice
    with pytest.raises(BackendError, match="backend cuda: ONNX Runtime could not start CUDAExecutionProvider"):
        load_detector(square_model, backend="cuda")


def test_check_providers_passes_a_session_that_got_what_it_asked_for():
    plan = plan_backend("m.onnx", "cuda", _GPU)
    assert check_providers(plan, [CUDA, CPU], "m.onnx") is None


def test_engine_without_tensorrt_is_one_clear_line(tmp_path):
    try:
        import minescan.engine.tensorrt_common  # noqa: F401
    except TensorRTUnavailableError:
        pass
    else:
        pytest.skip("TensorRT is installed here")
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not built here")
    with pytest.raises(TensorRTUnavailableError) as caught:
        load_detector(engine, backend="auto")
    assert "TensorRT is not available" in str(caught.value) and "\n" not in str(caught.value)
