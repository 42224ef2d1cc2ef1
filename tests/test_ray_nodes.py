"""A node lost mid-run on a two-node Ray cluster: its scene runs again on the other node, nothing is lost.

``ray.cluster_utils.Cluster`` starts a head and a second node (one CPU each)
on this machine; a run with one worker per node loses the second node while
both scan.  The replacement worker cannot be placed (no node has room), so
the surviving worker finishes the run alone.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from minescan.scan.scanner import Scanner
from minescan.synthetic.scene import SceneSpec, write_scene
from tests.test_runs import assert_matches

ray = pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[1]
SLOW = {"worker_process_setup_hook": "testkit.slow_inference.slow_workers",
        "env_vars": {"MINESCAN_TEST_SLOW_SECONDS": "0.5"}}


def _running(out: Path) -> int:
    try:
        with sqlite3.connect(out / "journal.sqlite", timeout=10) as db:
            return db.execute("SELECT count(*) FROM scenes WHERE state = 'running'").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_a_node_lost_mid_scene_costs_a_retry_on_the_other_node(square_model, tmp_path):
    from ray.cluster_utils import Cluster

    from minescan.scaleout.ray_run import RaySettings

    scenes = []
    for seed in range(4):
        path = tmp_path / f"scene{seed}.tif"
        scenes.append((path, write_scene(path, SceneSpec(width=1400, height=1300, objects=12, seed=60 + seed, tile=320,
                                                          overlap=64, max_size=60))))
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), before]))  # the nodes' workers import testkit
    try:
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
        node = cluster.add_node(num_cpus=1)
    finally:
        os.environ.pop("PYTHONPATH") if before is None else os.environ.update(PYTHONPATH=before)
    out = tmp_path / "run"
    lost = threading.Event()

    def lose_the_second_node() -> None:
        deadline = time.monotonic() + 120
        while _running(out) < 2 and time.monotonic() < deadline:  # both workers inside a scene
            time.sleep(0.1)
        time.sleep(1.0)
        cluster.remove_node(node, allow_graceful=False)
        lost.set()

    try:
        ray.init(address=cluster.address, runtime_env=SLOW, logging_level="ERROR", log_to_driver=False)
        killer = threading.Thread(target=lose_the_second_node, daemon=True)
        killer.start()
        summary = Scanner(square_model, tile=320, overlap=64).scan_many(
            [p for p, _ in scenes], out, ray=RaySettings(workers=2, cpus_per_worker=1))
        killer.join(timeout=60)
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert lost.is_set()
    assert [s.status for s in summary.scenes] == ["done"] * 4
    assert sum(s.retried for s in summary.scenes) == 1
    for path, truth in scenes:
        assert_matches(out / f"{path.stem}.gpkg", truth)
