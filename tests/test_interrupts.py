"""Killed or interrupted writes leave nothing behind, and the same command then finishes the job.

The kills are deterministic: ``MINESCAN_FAULT`` (a test hook of
:mod:`minescan.results.atomic`) makes a real ``python -m minescan`` SIGKILL
itself right after the temporary is written or right after it is renamed
into place; the Ctrl-C test waits for a file that inference creates
(:mod:`testkit.slow_inference`) before it sends SIGINT.  Every wait is bounded.
"""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyogrio.raw
import pytest

from minescan.results.atomic import FAULT_VARIABLE, TEMPORARY_NAME, atomic_path, sweep_stale_temporaries, temporary_path, write_atomically
from minescan.results.evaluation import compare
from minescan.synthetic.scene import SceneSpec, write_scene

TIMEOUT = 120  # s, for any one subprocess
ROOT = Path(__file__).resolve().parents[1]


def _env(fault=None):
    env = {k: v for k, v in os.environ.items() if k != FAULT_VARIABLE}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if fault:
        env[FAULT_VARIABLE] = fault
    return env


def _run(command, fault=None):
    return subprocess.run(command, capture_output=True, text=True, env=_env(fault), timeout=TIMEOUT, cwd=ROOT)


def _temporaries(folder):
    return sorted(p.name for p in Path(folder).iterdir() if ".tmp" in p.name)


def _matches(path, truth):
    meta, _, _, fields = pyogrio.raw.read(str(path))
    names = list(meta["fields"])
    boxes = np.stack([fields[names.index(k)] for k in ("col_min", "row_min", "col_max", "row_max")], axis=1).reshape(-1, 4)
    agreement = compare(boxes, np.ones(len(boxes)), fields[names.index("class_id")], truth.boxes, truth.classes)
    return agreement.matched == agreement.detections == len(truth.boxes)


def _dead_pid():
    """The pid of a process that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=TIMEOUT)
    return child.pid


@pytest.fixture
def scene(tmp_path):
    path = tmp_path / "in" / "x.tif"
    path.parent.mkdir()
    return path, write_scene(path, SceneSpec(width=900, height=800, objects=8, tile=320, overlap=64, nodata_width=100, seed=5))


def test_killed_after_the_temporary_is_written_then_rerun(scene, square_model, tmp_path):
    path, truth = scene
    out = tmp_path / "out" / "x.gpkg"
    out.parent.mkdir()
    command = [sys.executable, "-m", "minescan", "scan", str(path), "--model", str(square_model), "--out", str(out),
               "--tile", "320", "--overlap", "64"]
    killed = _run(command, fault="after-temp")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    left = _temporaries(out.parent)
    assert not out.exists() and left and all(TEMPORARY_NAME.match(n) and n.startswith(".x.gpkg.") for n in left), left

    # Temporaries the rerun must leave alone: a live writer's (this test's pid) and another destination's.
    live = temporary_path(out).with_name(f".x.gpkg.{os.getpid()}-0badcafe.tmp.gpkg")
    other = out.with_name(f".y.gpkg.{_dead_pid()}-0badcafe.tmp.gpkg")
    live.write_bytes(b"being written")
    other.write_bytes(b"someone else's")

    finished = _run(command)
    assert finished.returncode == 0 and finished.stderr == "", finished.stderr
    assert _matches(out, truth)
    assert _temporaries(out.parent) == sorted([live.name, other.name])


def test_killed_after_the_rename_before_the_journal_commits_then_rerun(square_model, tmp_path):
    truths = {}
    for i in range(2):
        path = tmp_path / "in" / f"s{i}.tif"
        path.parent.mkdir(exist_ok=True)
        truths[f"s{i}"] = write_scene(path, SceneSpec(width=900, height=800, objects=6, tile=320, overlap=64, seed=30 + i))
    out = tmp_path / "run"
    command = [sys.executable, "-m", "minescan", "scan", *(str(tmp_path / "in" / f"{s}.tif") for s in truths),
               "--model", str(square_model), "--out-dir", str(out), "--tile", "320", "--overlap", "64"]
    killed = _run(command, fault="after-rename:s0.gpkg")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert (out / "s0.gpkg").is_file() and not (out / "s1.gpkg").exists()
    with sqlite3.connect(out / "journal.sqlite", timeout=10) as db:
        assert db.execute("SELECT product_id, state FROM scenes").fetchall() == [("s0", "running")]

    finished = _run(command)
    assert finished.returncode == 0 and finished.stderr == "", finished.stderr
    with sqlite3.connect(out / "journal.sqlite", timeout=10) as db:
        rows = dict((r[0], r[1:]) for r in db.execute("SELECT product_id, state, attempts FROM scenes"))
    assert rows == {"s0": ("done", 2), "s1": ("done", 1)}
    assert sorted(p.name for p in out.glob("*.gpkg")) == ["s0.gpkg", "s1.gpkg"]
    for name, truth in truths.items():
        assert _matches(out / f"{name}.gpkg", truth)
    assert not _temporaries(out)


def test_ctrl_c_mid_inference_exits_130_and_leaves_nothing(scene, square_model, tmp_path):
    path, _ = scene
    out = tmp_path / "out" / "x.gpkg"
    out.parent.mkdir()
    marker = tmp_path / "inference-started"
    command = [sys.executable, "-m", "testkit.slow_inference", str(marker), "2",
               "scan", str(path), "--model", str(square_model), "--out", str(out), "--tile", "320", "--overlap", "64", "--batch", "1"]
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=ROOT)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not marker.exists() and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert marker.exists() and run.poll() is None, run.stderr.read() if run.poll() is not None else "no inference"
        sent = time.monotonic()
        run.send_signal(signal.SIGINT)
        # A second Ctrl-C, as a user would press it, if the first is not answered within a second: in three
        # full suite runs (2026-12-03) the SIGINT went unanswered (exit 0, nothing on stderr), never when the
        # test ran alone; testkit.slow_inference now restores Ctrl-C handling the test process may pass on.
        try:
            stdout, stderr = run.communicate(timeout=1)
        except subprocess.TimeoutExpired:
            run.send_signal(signal.SIGINT)
            stdout, stderr = run.communicate(timeout=20)
        took = time.monotonic() - sent
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 130, stderr
    assert took < 5, f"{took:.1f} s from SIGINT to exit"
    assert stderr.strip().splitlines()[-1] == "minescan: interrupted"
    assert not out.exists() and not _temporaries(out.parent)


def test_sweep_removes_only_dead_writers_temporaries(tmp_path):
    target = tmp_path / "r.gpkg"
    dead = _dead_pid()
    stale = [f".r.gpkg.{dead}-ab12.tmp.gpkg", f".r.gpkg.{dead}-ab12.tmp.gpkg-journal", f".r.{dead}.tmp.gpkg"]
    reused = f".r.gpkg.{os.getpid()}-cd34.tmp.gpkg"  # this pid, but the file predates this process: a reused pid
    kept = [f".r.gpkg.{os.getpid()}-ef56.tmp.gpkg", f".s.gpkg.{dead}-ab12.tmp.gpkg", f".r.gpkg.{dead}-ab12.tmp.gpkg.bak~", "r.gpkg"]
    for name in [*stale, reused, *kept]:
        (tmp_path / name).write_bytes(b"x")
    os.utime(tmp_path / reused, (1e9, 1e9))
    removed = sweep_stale_temporaries(target)
    assert sorted(p.name for p in removed) == sorted([*stale, reused])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept)


def test_every_write_sweeps_first(tmp_path):
    target = tmp_path / "r.json"
    leftover = tmp_path / f".r.json.{_dead_pid()}-ab12.tmp.json"
    leftover.write_bytes(b"half")
    write_atomically(target, b"{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]
    leftover.write_bytes(b"half")
    with atomic_path(target) as temporary:
        assert not leftover.exists()
        temporary.write_bytes(b"{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]
