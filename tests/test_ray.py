"""Runs on Ray: the same results as a local run, split scenes stitched exactly, workers and drivers killed.

One local Ray instance (2 CPUs) serves the module; command-line runs in
subprocesses join it by its address, as a user joins a cluster.  Scenes are
the project's known-answer scenes, scanned by the bright-square detector.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from minescan.cli import main
from minescan.scan.scanner import Scanner
from minescan.synthetic.scene import SceneSpec, write_scene
from tests.test_runs import assert_matches, journal, read_boxes

ray = pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[1]
TILING = ["--tile", "320", "--overlap", "64"]
SLOW = {"worker_process_setup_hook": "testkit.slow_inference.slow_workers",
        "env_vars": {"MINESCAN_TEST_SLOW_SECONDS": "0.5"}}


@pytest.fixture(scope="module")
def cluster():
    """A local Ray instance for the module; workers import testkit (for the slow-inference hook) from the checkout."""
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = _env()["PYTHONPATH"]  # the raylet and its workers inherit it
    try:
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    finally:
        os.environ.pop("PYTHONPATH") if before is None else os.environ.update(PYTHONPATH=before)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """Four known-answer scenes of 25 tiles each (320/64 px), objects up to the overlap."""
    folder = tmp_path_factory.mktemp("scenes")
    made = []
    for seed in range(4):
        path = folder / f"scene{seed}.tif"
        truth = write_scene(path, SceneSpec(width=1400, height=1300, objects=12, seed=40 + seed, tile=320, overlap=64,
                                            max_size=60))
        made.append((path, truth))
    return made


def boxes_of(path: Path) -> np.ndarray:
    boxes, classes, _ = read_boxes(path)
    order = np.lexsort((classes, *boxes.T[::-1]))
    return np.column_stack([boxes, classes])[order]


def summary(out: Path) -> dict:
    return {s["product_id"]: s for s in json.loads((out / "run_summary.json").read_text())["scenes"]}


def test_a_ray_run_gives_the_local_runs_results_and_resumes(cluster, scenes, square_model, tmp_path):
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"II*\x00 not a GeoTIFF")
    paths = [p for p, _ in scenes] + [broken]
    scanner = Scanner(square_model, tile=320, overlap=64)
    local = scanner.scan_many(paths, tmp_path / "local")
    on_ray = scanner.scan_many(paths, tmp_path / "ray", ray=True)
    assert [s.status for s in on_ray.scenes] == [s.status for s in local.scenes] == ["done"] * 4 + ["failed"]
    assert "broken" in on_ray.scenes[-1].error
    for (path, truth), report in zip(scenes, on_ray.scenes):
        result = tmp_path / "ray" / f"{path.stem}.gpkg"
        assert Path(report.outcome.result) == result
        assert_matches(result, truth)
        np.testing.assert_array_equal(boxes_of(result), boxes_of(tmp_path / "local" / f"{path.stem}.gpkg"))
    again = scanner.scan_many(paths, tmp_path / "ray", ray=True)
    assert [s.resumed for s in again.scenes[:4]] == [True] * 4


@pytest.mark.parametrize("max_size", [60, 150])  # 150 px: objects larger than the overlap, merged from cut parts
def test_a_split_scene_is_stitched_exactly_as_one_scan(cluster, square_model, tmp_path, capsys, max_size):
    scene = tmp_path / "big.tif"
    truth = write_scene(scene, SceneSpec(width=2200, height=2000, objects=40, seed=7, tile=320, overlap=64,
                                         max_size=max_size))
    assert main(["scan", str(scene), "--model", str(square_model), "--out", str(tmp_path / "single.gpkg"), *TILING]) == 0
    assert main(["scan", str(scene), "--model", str(square_model), "--out-dir", str(tmp_path / "split"), *TILING,
                 "--ray", "--ray-workers", "2", "--split-rows", "2"]) == 0
    out = capsys.readouterr().out
    assert len(re.findall(r"big \[tile rows \d+-\d+\]: scanning", out)) == 4  # 8 tile rows in parts of 2
    single, split = boxes_of(tmp_path / "single.gpkg"), boxes_of(tmp_path / "split" / "big.gpkg")
    assert len(split) == len(single) > 0
    np.testing.assert_array_equal(split, single)
    if max_size <= 64:
        assert_matches(tmp_path / "split" / "big.gpkg", truth)


def _command(paths, model, out, address) -> list[str]:
    return [sys.executable, "-m", "minescan", "scan", *map(str, paths), "--model", str(model), "--out-dir", str(out),
            *TILING, "--ray", address, "--ray-workers", "2", "--ray-runtime-env", json.dumps(SLOW)]


def _until(process: subprocess.Popen, pattern: str, seen: list[str], limit: float = 120) -> re.Match:
    """Read the process's stdout until a line matches ``pattern``."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        text = process.stdout.readline()
        if not text:
            break
        seen.append(text)
        found = re.search(pattern, text)
        if found:
            return found
    raise AssertionError(f"no line matched {pattern!r}:\n{''.join(seen)}")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def test_a_worker_killed_mid_scene_costs_a_retry_and_loses_nothing(cluster, scenes, square_model, tmp_path):
    out = tmp_path / "run"
    paths = [p for p, _ in scenes]
    process = subprocess.Popen(_command(paths, square_model, out, cluster), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=_env())
    seen: list[str] = []
    try:
        victim = _until(process, r"worker \d+ \([^:]+:(\d+)\): (scene\d+): scanning", seen)
        time.sleep(1.0)  # inside the scan: each batch of 4 tiles takes 0.5 s more, a scene 3.5 s
        os.kill(int(victim.group(1)), signal.SIGKILL)
        rest, errors = process.communicate(timeout=180)
    finally:
        process.kill()
    log = "".join(seen) + rest
    assert process.returncode == 0, log + errors
    assert "its worker died" in log and "retrying on another worker" in log
    reports = summary(out)
    assert [reports[p.stem]["status"] for p in paths] == ["done"] * 4
    assert reports[victim.group(2)]["retried"] == 1
    assert sum(r["retried"] for r in reports.values()) == 1
    assert all(row[0] == "done" for row in journal(out).values())
    for path, truth in scenes:
        assert_matches(out / f"{path.stem}.gpkg", truth)


def test_a_killed_driver_resumes_and_scans_nothing_twice(cluster, scenes, square_model, tmp_path, capsys):
    out = tmp_path / "run"
    paths = [p for p, _ in scenes]
    process = subprocess.Popen(_command(paths, square_model, out, cluster) + ["--ray-workers", "1"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    seen: list[str] = []
    try:
        first = _until(process, r"\[1/4\] (scene\d+): .* -> ", seen)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        process.kill()
    done = {k: v for k, v in journal(out).items() if v[0] == "done"}
    assert first.group(1) in done and len(done) < 4
    stamps = {name: (out / f"{name}.gpkg").stat().st_mtime_ns for name in done}
    assert main(["scan", *map(str, paths), "--model", str(square_model), "--out-dir", str(out), *TILING,
                 "--ray", cluster]) == 0
    log = capsys.readouterr().out
    for name in done:
        assert f"{name}: done in an earlier run, skipped" in log
        assert (out / f"{name}.gpkg").stat().st_mtime_ns == stamps[name]  # not scanned or written again
    reports = summary(out)
    assert all(r["status"] == "done" for r in reports.values())
    for path, truth in scenes:
        assert_matches(out / f"{path.stem}.gpkg", truth)


def test_a_scene_that_kills_every_worker_fails_alone_after_its_retries(cluster, scenes, square_model, tmp_path):
    poison = tmp_path / "poison.tif"
    poison.write_bytes(scenes[0][0].read_bytes())
    paths = [scenes[1][0], poison, scenes[2][0]]
    hook = {"worker_process_setup_hook": "testkit.slow_inference.poisoned_workers"}
    run = subprocess.run([sys.executable, "-m", "minescan", "scan", *map(str, paths), "--model", str(square_model),
                          "--out-dir", str(tmp_path / "run"), *TILING, "--ray", cluster, "--ray-workers", "1",
                          "--ray-runtime-env", json.dumps(hook)], capture_output=True, text=True, timeout=300, env=_env())
    assert run.returncode == 1, run.stdout + run.stderr
    reports = summary(tmp_path / "run")
    assert [reports[p.stem]["status"] for p in paths] == ["done", "failed", "done"]
    assert reports["poison"]["error"].startswith("its worker died 3 time(s)")
    assert "1 of 3 scenes failed (poison)" in run.stderr


def test_ray_options_fail_in_one_line(cluster, scenes, square_model, tmp_path, capsys, monkeypatch):
    scene = str(scenes[0][0])
    assert main(["scan", scene, "--model", str(square_model), "--out", str(tmp_path / "a.gpkg"), "--ray"]) == 1
    assert "--ray scans a run: give --out-dir DIR" in capsys.readouterr().err
    assert main(["scan", scene, "--model", str(square_model), "--out-dir", str(tmp_path / "b"), "--split-rows", "2"]) == 1
    assert "--split-rows 2 needs --ray" in capsys.readouterr().err
    assert main(["scan", scene, "--model", str(square_model), "--out-dir", str(tmp_path / "c"), "--ray",
                 "--ray-runtime-env", "{nope"]) == 1
    assert "--ray-runtime-env '{nope' is not JSON" in capsys.readouterr().err
    assert main(["scan", scene, "--model", str(square_model), "--out-dir", str(tmp_path / "f"), "--ray",
                 "--max-memory", "1K"]) == 1  # the driver only plans; each worker loads the model within the budget
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.match(r"minescan: error: worker 1 on \S+ cannot load the model: memory budget 1 KiB is "
                                       r"too small", err[0]), err
    nobody = subprocess.run([sys.executable, "-m", "minescan", "scan", scene, "--model", str(square_model), "--out-dir",
                             str(tmp_path / "e"), "--ray", "127.0.0.1:1"], capture_output=True, text=True, timeout=60)
    assert nobody.returncode == 1
    assert nobody.stderr.strip().splitlines()[-1].startswith("minescan: error: cannot reach the Ray cluster at '127.0.0.1:1'")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if ray were not installed
    assert main(["scan", scene, "--model", str(square_model), "--out-dir", str(tmp_path / "d"), "--ray"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["minescan: error: running on Ray needs the ray package: pip install 'minescan[ray]'"]


def test_the_readme_ray_examples_run_as_written(tmp_path):
    from minescan.synthetic.mining import MiningSpec, write_mining_scene

    text = (ROOT / "README.md").read_text()
    blocks = []
    for marker in ("ray-api-example", "ray-data-example"):
        match = re.search(rf"<!-- {marker} -->\s*```python\n(.*?)```", text, re.S)
        assert match, f"README has no example marked <!-- {marker} -->"
        blocks.append(match.group(1))
    (tmp_path / "minescan-demo").mkdir()
    write_mining_scene(tmp_path / "minescan-demo" / "scene.tif", MiningSpec(width=1536, height=1536, seed=7))
    (tmp_path / "minescan").mkdir()
    (tmp_path / "minescan" / "models").symlink_to(ROOT / "minescan" / "models")
    run = subprocess.run([sys.executable, "-c", "\n".join(blocks)], cwd=tmp_path, env=_env(), capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert re.search(r"^1 done; \{'illegal_mining': \d+", run.stdout, re.M), run.stdout
    assert re.search(r"^9 tiles, \d+ boxes before stitching", run.stdout, re.M), run.stdout
    assert (tmp_path / "results-api" / "scene.gpkg").is_file()
