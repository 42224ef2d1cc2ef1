"""The memory budget and the model-aware split of inference calls (minescan.engine.memory_budget).

On the demo detector and small generated scenes: a budget too small for one call
is one line naming the value, a malformed one too; the plan says which split
was chosen and why; a budget that holds one call makes the scan run one call;
the result does not depend on the split.  No timing is asserted.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from minescan import Scanner
from minescan.cli import main
from minescan.defaults import DEFAULTS
from minescan.engine.memory_budget import (
    CpuSplit, MemoryBudget, MemoryBudgetError, ModelCost, choose_split, parse_size,
)

DEMO = Path(__file__).resolve().parents[1] / "minescan" / "models" / "demo_detector.onnx"


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    """A 1664 px demo-like mining scene: 3 x 3 tiles of 640 px with 128 px overlap."""
    from minescan.synthetic.mining import MiningSpec, write_mining_scene

    path = tmp_path_factory.mktemp("budget") / "scene.tif"
    write_mining_scene(path, MiningSpec(width=1664, height=1664, seed=5, illegal_density=6.0, legal_density=2.0))
    return path


@pytest.fixture(scope="module")
def demo_scanner() -> Scanner:
    return Scanner(DEMO, backend="cpu")


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_sizes_parse_in_binary_units():
    assert parse_size("2G") == 2 * 2**30
    assert parse_size("1500M") == 1500 * 2**20
    assert parse_size("2GiB") == parse_size("2gb") == 2 * 2**30
    assert parse_size("1.5G") == 3 * 2**29
    assert parse_size("4096") == 4096
    for bad in ("abc", "2X", "-1G", "", "0"):
        with pytest.raises(MemoryBudgetError, match="memory size"):
            parse_size(bad)


def test_too_small_budget_is_one_line_naming_the_value(capsys, scene, tmp_path):
    code = main(["scan", str(scene), "--model", str(DEMO), "--backend", "cpu", "--max-memory", "1",
                 "--out", str(tmp_path / "out.gpkg")])
    line = _one_line(capsys)
    assert code == 1 and "--max-memory 1:" in line and "too small" in line and "per call" in line
    assert not (tmp_path / "out.gpkg").exists()


def test_malformed_budget_is_one_line_before_the_model_loads(capsys, scene, tmp_path):
    code = main(["scan", str(scene), "--model", str(tmp_path / "missing.onnx"), "--max-memory", "abc",
                 "--out", str(tmp_path / "out.gpkg")])
    line = _one_line(capsys)
    assert code == 1 and "--max-memory 'abc'" in line and "model not found" not in line


def test_api_refuses_a_malformed_budget_before_loading():
    with pytest.raises(MemoryBudgetError, match="'lots'"):
        Scanner("no-such-model.onnx", max_memory="lots")


def test_the_plan_shows_the_chosen_split_and_why(capsys, scene):
    assert main(["scan", str(scene), "--model", str(DEMO), "--backend", "cpu", "--max-memory", "8G", "--dry-run"]) == 0
    out = capsys.readouterr().out
    calls = next(line for line in out.splitlines() if line.startswith("calls"))
    assert "s/tile" in calls and "per call" in calls and "budget 8.0 GiB [option]" in calls
    inference = next(line for line in out.splitlines() if line.startswith("inference"))
    assert "concurrent call(s) x" in inference


def test_cheap_model_keeps_one_call_per_core(demo_scanner):
    detector = demo_scanner.detector
    assert detector.cost is not None and detector.cost.seconds_per_tile < DEFAULTS.costly_call_s  # the demo is cheap
    assert (detector.threads, detector.concurrency) == DEFAULTS.cpu_split()


def test_budget_holding_one_call_runs_one_call_with_the_same_result(scene):
    free = Scanner(DEMO, backend="cpu", threads=1, workers=2).scan(scene)
    tight = Scanner(DEMO, backend="cpu")
    # A known cost, so that the budget holds exactly one call whatever this test process grew to (a process that
    # ran the model before may reuse freed memory, and the probe then reads a smaller growth).
    cost = replace(tight.detector.cost, call_bytes=100 * 2**20, base_bytes=400 * 2**20)
    tight.detector.cost = cost
    tight = Scanner(tight.detector, max_memory=(400 + 256 + 150) * 2**20)
    assert tight.detector.concurrency == 1
    result = tight.scan(scene)
    assert result.plan.model.workers == 1 and "holds 1 call(s)" in result.plan.explain()
    assert free.plan.model.workers == 2 and len(free.detections) > 0
    for name in ("boxes", "scores", "classes"):
        np.testing.assert_array_equal(getattr(result.detections, name), getattr(free.detections, name))


def test_explicit_workers_beyond_the_budget_are_refused():
    with pytest.raises(MemoryBudgetError, match="2 call"):
        choose_split(_cost(0.02, 100, 400), MemoryBudget.of((400 + 256 + 150) * 2**20), workers=2, cores=2)


def _cost(seconds: float, call_mib: int, base_mib: int = 300) -> ModelCost:
    return ModelCost(seconds, call_mib * 2**20, base_mib * 2**20, 640, 1)


def test_costly_model_gets_fewer_calls_with_more_threads():
    budget = MemoryBudget.of("64G")
    split = choose_split(_cost(1.7, 1000), budget, cores=2)
    assert (split.threads, split.workers) == (2, 1) and "costly" in split.reason
    cheap = choose_split(_cost(0.02, 15), budget, cores=2)
    assert (cheap.threads, cheap.workers) == (1, 2)
    asked = choose_split(_cost(1.7, 1000), budget, workers=2, cores=2)  # what the caller gives is kept
    assert (asked.threads, asked.workers) == (1, 2)


def test_budget_caps_the_calls_and_gives_their_cores_to_the_rest():
    budget = MemoryBudget.of((300 + 256 + 2 * 100 + 50) * 2**20)  # model loaded + reader + two calls and a half
    split = choose_split(_cost(0.02, 100), budget, cores=4)
    assert (split.threads, split.workers) == (2, 2) and "holds 2 call(s)" in split.reason


def test_default_budget_never_refuses_a_model():
    default = MemoryBudget(2**20, explicit=False, origin="default: test")
    split = choose_split(_cost(1.7, 4000), default, cores=2)
    assert isinstance(split, CpuSplit) and split.workers == 1 and "1 call anyway" in split.reason
    with pytest.raises(MemoryBudgetError, match="too small"):
        choose_split(_cost(1.7, 4000), MemoryBudget.of(2**20), cores=2)
