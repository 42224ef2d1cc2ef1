"""ONNX Runtime's GPU providers as minescan drives them, checked without a GPU.

No GPU and no onnxruntime-gpu here: a stand-in for ``onnxruntime.InferenceSession``
says it leads with the GPU provider asked for, records what minescan calls on it
(``disable_fallback``, ``io_binding``, ``run_with_iobinding``) and the provider
options it was given, and computes on a real CPU session underneath, so the demo
detector's answers can be compared with a plain CPU run.  ``preload_dlls`` and
``OrtValue.ortvalue_from_numpy`` are stand-ins too.  What these tests cannot tell:
whether the real CUDA and TensorRT providers accept the calls (see
benchmarks/gpu_check.sh for the run on a GPU machine).
"""

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import minescan

from minescan.defaults import DEFAULTS
from minescan.engine import BackendError, load_detector, onnxruntime_backend
from minescan.engine.backends import (
    CPU, CUDA, TENSORRT, check_providers, installed_onnxruntime, onnxruntime_conflict, onnxruntime_folder, plan_backend,
)
from minescan.engine.detector import split_batch
from minescan.model.contract import INPUT_NAME
from minescan.engine.onnxruntime_backend import OnnxRuntimeDetector, model_key, tensorrt_cache_dir

_RealSession = ort.InferenceSession
_MODELS = Path(minescan.__file__).parent / "models"  # the shipped demo models (not minescan.demo: it imports the raster code)


def shipped_model(precision="fp32", *, classifier=False):
    return _MODELS / ("demo_classifier.onnx" if classifier else "demo_detector.onnx")
_BOTH = ("onnxruntime", "onnxruntime-gpu")


class Calls:
    """What the stand-ins saw, in order."""

    def __init__(self):
        self.log: list[tuple] = []

    def names(self) -> list[str]:
        return [entry[0] for entry in self.log]


class FakeBinding:
    """An IOBinding over a CPU session: records the device of every bound value."""

    def __init__(self, session, calls):
        self._session, self._calls = session, calls
        self.inputs, self.outputs = {}, []

    def bind_ortvalue_input(self, name, value):
        self._calls.log.append(("bind_ortvalue_input", name, value.device))
        self.inputs[name] = value.array

    def bind_output(self, name, device_type="cpu", device_id=0, element_type=None, shape=None, buffer_ptr=None):
        self._calls.log.append(("bind_output", name, (device_type, device_id)))
        self.outputs.append(name)

    def copy_outputs_to_cpu(self):
        self._calls.log.append(("copy_outputs_to_cpu",))
        return self._results


class FakeOrtValue:
    def __init__(self, array, device):
        self.array, self.device = array, device

    @classmethod
    def make(cls, calls):
        def ortvalue_from_numpy(array, device_type="cpu", device_id=0):
            calls.log.append(("ortvalue_from_numpy", array.shape, (device_type, device_id)))
            return cls(array.copy(), (device_type, device_id))
        return ortvalue_from_numpy


def fake_session_class(calls: Calls, leads_with: str | None):
    """An InferenceSession stand-in; ``leads_with``: the provider it claims to run on (None: the first asked for)."""

    class FakeSession:
        def __init__(self, path, options=None, providers=None):
            calls.log.append(("InferenceSession", list(providers)))
            self._real = _RealSession(path, options, providers=[CPU])
            asked = [p[0] if isinstance(p, tuple) else p for p in providers]
            first = leads_with or asked[0]
            self._providers = [first] + [p for p in asked if p != first]

        def get_providers(self):
            return list(self._providers)

        def disable_fallback(self):
            calls.log.append(("disable_fallback",))

        def io_binding(self):
            calls.log.append(("io_binding",))
            return FakeBinding(self, calls)

        def run_with_iobinding(self, binding, run_options=None):
            calls.log.append(("run_with_iobinding",))
            binding._results = self._real.run(binding.outputs, binding.inputs)

        def run(self, names, feed, run_options=None):
            calls.log.append(("run",))
            return self._real.run(names, feed)

        def __getattr__(self, name):  # get_inputs, get_outputs, get_modelmeta
            return getattr(self._real, name)

    return FakeSession


@pytest.fixture
def gpu(monkeypatch, tmp_path):
    """Stand-ins on the onnxruntime module the backend uses; returns a function installing a session that leads with a provider."""
    calls = Calls()
    monkeypatch.setattr(ort, "preload_dlls", lambda *a, **k: calls.log.append(("preload_dlls",)), raising=False)
    monkeypatch.setattr(ort.OrtValue, "ortvalue_from_numpy", staticmethod(FakeOrtValue.make(calls)))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    def install(leads_with: str | None = None) -> Calls:
        monkeypatch.setattr(ort, "InferenceSession", fake_session_class(calls, leads_with))
        return calls

    return install


def _tiles(count=2, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, 640, 640, 3), dtype=np.uint8)


def _detector(providers):
    return OnnxRuntimeDetector(shipped_model("fp32"), providers=providers, threads=1)


# Defect 1: no disable_fallback on a GPU session.

@pytest.mark.parametrize("providers", [(CUDA, CPU), (TENSORRT, CUDA, CPU)])
def test_a_gpu_session_has_its_fallback_disabled(gpu, providers):
    calls = gpu()
    detector = _detector(providers)
    assert detector.backend == {CUDA: "onnxruntime-cuda", TENSORRT: "onnxruntime-tensorrt"}[providers[0]]
    assert calls.names().count("disable_fallback") == 1
    assert calls.names().index("disable_fallback") > calls.names().index("InferenceSession")


def test_a_gpu_session_that_started_on_the_cpu_keeps_onnx_runtimes_fallback(gpu):
    # Nothing to disable: the provider never started, and check_providers reports that.
    calls = gpu(leads_with=CPU)
    _detector((CUDA, CPU))
    assert "disable_fallback" not in calls.names()


# Defect 2: no preload_dlls before a GPU session; the CPU path must not pay for it.

def test_gpu_libraries_are_preloaded_before_a_gpu_session_starts(gpu):
    calls = gpu()
    _detector((CUDA, CPU))
    names = calls.names()
    assert names.count("preload_dlls") == 1 and names.index("preload_dlls") < names.index("InferenceSession")


def test_an_onnx_runtime_without_preload_dlls_still_starts_a_gpu_session(gpu, monkeypatch):
    calls = gpu()
    monkeypatch.delattr(ort, "preload_dlls")
    assert _detector((CUDA, CPU)).backend == "onnxruntime-cuda"
    assert "preload_dlls" not in calls.names()


def test_the_cpu_path_neither_preloads_gpu_libraries_nor_binds_io(gpu):
    calls = gpu()
    detector = _detector((CPU,))
    detector.detect(_tiles(2))
    detector.run_contract(_tiles(1))
    assert not {"preload_dlls", "io_binding", "run_with_iobinding", "disable_fallback", "ortvalue_from_numpy"} & set(calls.names())
    assert "run" in calls.names()


# Defect 3: the TensorRT provider rebuilt its engine at every start (no caches).

def test_the_tensorrt_provider_gets_engine_and_timing_caches_per_model(gpu, tmp_path):
    calls = gpu()
    _detector((TENSORRT, CUDA, CPU))
    providers = next(entry[1] for entry in calls.log if entry[0] == "InferenceSession")
    assert providers[1:] == [CUDA, CPU]
    name, options = providers[0]
    cache = tmp_path / "cache" / "minescan" / "ort-trt"
    assert name == TENSORRT and tensorrt_cache_dir() == cache
    assert options["trt_engine_cache_enable"] == "True" and options["trt_timing_cache_enable"] == "True"
    assert options["trt_timing_cache_path"] == str(cache)
    assert options["trt_engine_cache_path"] == str(cache / model_key(shipped_model("fp32")))
    assert options["trt_fp16_enable"] == "False"  # precision comes from the graph
    assert (cache / model_key(shipped_model("fp32"))).is_dir()


def test_engine_folders_follow_the_model_content_not_its_name(tmp_path):
    first, second = tmp_path / "a" / "model.onnx", tmp_path / "b" / "model.onnx"
    for path, data in ((first, b"weights 1"), (second, b"weights 2")):
        path.parent.mkdir()
        path.write_bytes(data)
    assert model_key(first) != model_key(second)
    assert model_key(first).startswith("model-") and model_key(first).endswith(f"-ort{ort.__version__}")


def test_the_cache_folder_default_is_in_defaults_and_under_the_users_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert DEFAULTS.ort_trt_cache == ""
    assert tensorrt_cache_dir() == tmp_path / ".cache" / "minescan" / "ort-trt"


def test_the_cuda_provider_alone_gets_no_tensorrt_options(gpu):
    calls = gpu()
    _detector((CUDA, CPU))
    assert next(entry[1] for entry in calls.log if entry[0] == "InferenceSession") == [CUDA, CPU]


# Defect 4: no I/O binding on the CUDA provider.

def test_the_cuda_provider_runs_through_a_device_io_binding(gpu):
    tiles = _tiles(3)
    expected = _detector((CPU,)).detect(tiles)
    calls = gpu()
    detector = _detector((CUDA, CPU))
    calls.log.clear()
    found = detector.detect(tiles)
    names = calls.names()
    assert "run" not in names
    chunks = [len(chunk) for chunk in split_batch(tiles, detector._max_batch)]  # one call per chunk of the model's batch
    assert names.count("io_binding") == names.count("run_with_iobinding") == names.count("copy_outputs_to_cpu") == len(chunks)
    uploads = [entry for entry in calls.log if entry[0] == "ortvalue_from_numpy"]
    assert uploads == [("ortvalue_from_numpy", (n, 640, 640, 3), ("cuda", 0)) for n in chunks]  # each chunk once, to the device
    assert ("bind_ortvalue_input", INPUT_NAME, ("cuda", 0)) in calls.log
    outputs = [entry for entry in calls.log if entry[0] == "bind_output"]
    assert outputs and all(entry[2] == ("cuda", 0) for entry in outputs)  # outputs stay on the device
    assert names.index("run_with_iobinding") < names.index("copy_outputs_to_cpu")  # read back once per call, after the run
    for mine, theirs in zip(found, expected, strict=True):
        np.testing.assert_allclose(mine.boxes, theirs.boxes, atol=1e-4)
        np.testing.assert_array_equal(mine.classes, theirs.classes)


def test_the_cuda_provider_binds_a_classifiers_calls_and_served_contract_outputs(gpu):
    calls = gpu()
    detector = _detector((CUDA, CPU))
    calls.log.clear()
    outputs = detector.run_contract(_tiles(2))
    assert len(outputs["num_detections"]) == 2 and "run" not in calls.names()
    bound = [entry[1] for entry in calls.log if entry[0] == "bind_output"]
    assert bound[: len(outputs)] == list(outputs)  # every contract output, in the contract's order
    classifier = OnnxRuntimeDetector(shipped_model("fp32", classifier=True), providers=(CUDA, CPU), threads=1)
    calls.log.clear()
    windows = np.ascontiguousarray(_tiles(3)[:, :64, :64])  # the demo classifier takes 64 px windows, 2 classes
    assert classifier.classify(windows).shape == (3, 2)
    assert "run_with_iobinding" in calls.names() and "run" not in calls.names()


def test_the_tensorrt_provider_takes_numpy_through_session_run(gpu):
    calls = gpu()
    detector = _detector((TENSORRT, CUDA, CPU))
    calls.log.clear()
    detector.detect(_tiles(1))
    assert "run" in calls.names() and "io_binding" not in calls.names()


# Item 2: onnxruntime and onnxruntime-gpu installed side by side.

def test_both_onnx_runtime_builds_installed_is_told_in_one_line():
    line = onnxruntime_conflict(_BOTH)
    assert line and "\n" not in line
    assert "pip uninstall -y onnxruntime onnxruntime-gpu" in line and "pip install onnxruntime-gpu" in line
    assert onnxruntime_conflict(("onnxruntime",)) is None and onnxruntime_conflict(("onnxruntime-gpu",)) is None


@pytest.mark.parametrize("backend", ["cuda", "tensorrt"])
def test_a_gpu_request_where_the_cpu_build_won_says_to_remove_both(backend):
    with pytest.raises(BackendError, match="onnxruntime and onnxruntime-gpu are both installed.*pip uninstall -y"):
        plan_backend("m.onnx", backend, [CPU], installed=_BOTH)


def test_a_gpu_request_where_the_gpu_build_won_carries_a_notice():
    plan = plan_backend("m.onnx", "cuda", [TENSORRT, CUDA, CPU], installed=_BOTH)
    assert plan.providers == (CUDA, CPU) and "both installed" in plan.notice
    assert check_providers(plan, [CUDA, CPU], "m.onnx") == plan.notice
    with pytest.raises(BackendError, match="fell back to CPUExecutionProvider.*GPU present\\?; also: onnxruntime and"):
        check_providers(plan, [CPU], "m.onnx")


def test_auto_says_so_when_both_builds_leave_it_on_the_cpu():
    plan = plan_backend("m.onnx", "auto", [CPU], installed=_BOTH)
    assert plan.providers == (CPU,) and plan.notice.startswith("backend auto: running on the CPU; onnxruntime and")
    assert plan_backend("m.onnx", "auto", [CPU], installed=("onnxruntime",)).notice is None


def test_the_cpu_backend_never_reads_the_installed_distributions(monkeypatch):
    monkeypatch.setattr("minescan.engine.backends.installed_onnxruntime", lambda: pytest.fail("read on the CPU path"))
    assert plan_backend("m.onnx", "cpu", [CPU]).notice is None


def _site(folder, *distributions):
    """A site-packages folder holding an onnxruntime/ package and the metadata of ``distributions``."""
    (folder / "onnxruntime").mkdir(parents=True)
    (folder / "onnxruntime" / "__init__.py").write_text("")
    for name, version in distributions:
        info = folder / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    return folder


def test_both_builds_in_the_folder_onnxruntime_imports_from_are_found(tmp_path):
    site = _site(tmp_path / "site", ("onnxruntime", "1.30.0"), ("onnxruntime-gpu", "1.31.1"))
    assert installed_onnxruntime(site) == _BOTH


def test_a_gpu_build_in_a_folder_of_its_own_is_no_conflict(tmp_path):
    # gpu_check.sh's layout: onnxruntime-gpu in /tmp/gpu-site ahead on PYTHONPATH, the CPU build in the venv.
    overlay = _site(tmp_path / "gpu-site", ("onnxruntime-gpu", "1.31.1"))
    _site(tmp_path / "venv", ("onnxruntime", "1.30.0"))
    assert installed_onnxruntime(overlay) == ("onnxruntime-gpu",)
    assert onnxruntime_conflict(installed_onnxruntime(overlay)) is None


def test_the_folder_is_the_one_onnxruntime_imports_from():
    assert onnxruntime_folder() == Path(ort.__file__).parent.parent
    assert "onnxruntime" in installed_onnxruntime()


def test_load_detector_reports_the_conflict_for_an_explicit_gpu_request(monkeypatch):
    monkeypatch.setattr("minescan.engine.backends.installed_onnxruntime", lambda: _BOTH)
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CPU])
    with pytest.raises(BackendError, match="both installed"):
        load_detector(shipped_model("fp32"), backend="cuda")


def test_this_machine_has_one_onnx_runtime_build():
    # The venv the tests run in must not have both (then every GPU notice above would be real).
    assert onnxruntime_conflict(installed_onnxruntime()) is None
    assert onnxruntime_backend.GPU_PROVIDERS == {CUDA, TENSORRT}


def test_run_bound_drives_the_real_io_binding_api(monkeypatch):
    # The real ONNX Runtime's IOBinding, on the one device it has here: the calls run_bound makes exist and agree
    # with session.run (on a GPU only the device differs).
    monkeypatch.setattr(onnxruntime_backend, "_DEVICE", ("cpu", 0))
    session = ort.InferenceSession(str(shipped_model()), providers=[CPU])
    tiles = _tiles(1)
    names = ["detection_boxes", "detection_scores", "num_detections"]
    bound = onnxruntime_backend.run_bound(session, names, tiles)
    plain = session.run(names, {INPUT_NAME: tiles})
    for mine, theirs in zip(bound, plain, strict=True):
        np.testing.assert_array_equal(mine, theirs)


def test_without_onnx_runtime_loading_a_model_names_the_extra_to_install(monkeypatch):
    """ONNX Runtime comes with the [cpu] or [gpu] extra (they share one folder): a bare install says which to add."""
    import sys

    from minescan.engine import BackendError, load_detector

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    with pytest.raises(BackendError, match=r"pip install 'minescan\[cpu\]'.*'minescan\[gpu\]'"):
        load_detector("minescan/models/demo_detector.onnx")
