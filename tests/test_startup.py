"""Start-up stays light: help and ``import minescan`` load no ONNX, TensorFlow, GeoPandas or pandas.

The time itself is measured in benchmarks/startup.py (ratios against ``import numpy, rasterio``);
this test checks the imports, which is what makes start-up fast and does not depend on the machine.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("onnx", "onnxruntime", "tensorflow", "tf2onnx", "geopandas", "pandas", "pyogrio", "pyarrow", "tensorrt")

PROBE = """
import sys
argv = {argv!r}
if argv is None:
    import minescan
else:
    from minescan.cli import main
    try:
        main(argv)
    except SystemExit:
        pass
print("MODULES", " ".join(sorted({{m.split('.')[0] for m in sys.modules}})))
"""


@pytest.mark.parametrize("argv", [None, ["--help"], ["scan", "--help"], ["export", "--help"], ["bench", "--help"]])
def test_help_and_import_load_no_heavy_package(argv):
    loaded = _modules(PROBE.format(argv=argv))
    assert "minescan" in loaded
    assert not loaded & set(HEAVY), f"{argv}: loaded {sorted(loaded & set(HEAVY))}"


def test_the_probe_would_see_a_heavy_import():
    # The check above can fail: a command that imports ONNX Runtime shows up in the probe.
    assert "onnxruntime" in _modules("import onnxruntime\n" + PROBE.format(argv=None))


def _modules(code: str) -> set[str]:
    """The top-level packages a fresh interpreter has loaded after ``code`` (from its last MODULES line)."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.strip().splitlines()[-1].removeprefix("MODULES ").split())


def test_value_types_and_the_scan_stages_import_no_engine():
    # Detections, the contract, metadata and labels are pure values; the raster and scan stages depend on
    # them, not on ONNX Runtime (which loads only when a model does).
    code = ("import minescan.model.contract, minescan.model.detections, minescan.model.metadata, minescan.model.labels\n"
            "import minescan.scan.plan, minescan.scan.stream, minescan.scan.stitch, minescan.raster.strips\n"
            + PROBE.format(argv=None))
    loaded = _modules(code)
    assert not loaded & {"onnx", "onnxruntime", "tensorflow", "tensorrt"}, sorted(loaded)
