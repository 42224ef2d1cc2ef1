"""Runs over many scenes: one result per scene, resumable after kill -9, faults isolated."""

import json
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pyogrio.raw
import pytest
import rasterio

from minescan.cli import main
from minescan.results.evaluation import compare
from testkit.products import write_band_files, write_safe, write_stac_item
from minescan.synthetic.scene import SceneSpec, write_scene

TILING = ["--tile", "320", "--overlap", "64"]
SMALL = dict(width=900, height=800, objects=8, tile=320, overlap=64, nodata_width=100)


def read_boxes(path):
    meta, _, _, fields = pyogrio.raw.read(str(path))
    names = list(meta["fields"])
    boxes = np.stack([fields[names.index(k)] for k in ("col_min", "row_min", "col_max", "row_max")], axis=1)
    return boxes.reshape(-1, 4), fields[names.index("class_id")], fields[names.index("scene")]


def assert_matches(path, truth):
    boxes, classes, _ = read_boxes(path)
    agreement = compare(boxes, np.ones(len(boxes)), classes, truth.boxes, truth.classes)
    assert agreement.matched == len(truth.boxes) == agreement.detections, agreement.format()


def journal(out):
    with sqlite3.connect(out / "journal.sqlite", timeout=10) as db:
        return {row[0]: row[1:] for row in db.execute("SELECT product_id, state, attempts, error FROM scenes")}


def leftovers(out):
    return [p.name for p in out.iterdir() if ".tmp" in p.name]


@pytest.fixture
def scenes(tmp_path):
    """A plain GeoTIFF, a .SAFE product and a folder of band files, with their truths by product id."""
    made = {}
    path = tmp_path / "in" / "plain.tif"
    path.parent.mkdir()
    made["plain"] = (path, write_scene(path, SceneSpec(seed=1, **SMALL)))
    safe, truth = write_safe(tmp_path / "in", SceneSpec(seed=2, **SMALL))
    made[safe.stem] = (safe, truth)
    _, truth = write_band_files(tmp_path / "in" / "bands", SceneSpec(seed=3, **SMALL), prefix="T34ABC_20230202T100000_")
    made["T34ABC_20230202T100000"] = (tmp_path / "in" / "bands", truth)
    return made


def test_many_inputs_into_one_folder(scenes, square_model, tmp_path, capsys):
    out = tmp_path / "results"
    manifest = tmp_path / "tonight.txt"
    manifest.write_text(f"# tonight\n{scenes['plain'][0]}\nin/bands\n")
    safe = next(p for p, _ in scenes.values() if p.suffix == ".SAFE")
    assert main(["scan", str(safe), "--manifest", str(manifest), "--model", str(square_model), "--out-dir", str(out), *TILING]) == 0
    stdout = capsys.readouterr().out
    assert stdout.count(" detections") == 3 + 1 and "3/3 scenes done, 0 failed" in stdout
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["totals"]["done"] == 3 and summary["totals"]["failed"] == 0
    for scene in summary["scenes"]:
        product_id = scene["product_id"]
        path, truth = scenes[product_id]
        assert scene["status"] == "done" and scene["outcome"]["tiles"] == 12
        assert sum(scene["outcome"]["detections"].values()) == len(truth.boxes)
        assert_matches(out / f"{product_id}.gpkg", truth)
        assert set(read_boxes(out / f"{product_id}.gpkg")[2]) == {product_id}
        with rasterio.open(out / f"{product_id}.png") as png:  # a quicklook with the boxes drawn in class colours
            image = png.read()
            assert png.driver == "PNG" and png.shape[0] >= 800 and png.shape[1] > 900  # the map, the legend at its right
        x0, y0, _, _ = truth.boxes[0].astype(int)
        colour = (255, 230, 0) if truth.classes[0] == 1 else (0, 230, 255)
        assert tuple(image[:, y0, x0 + 2]) == colour
    markdown = (out / "run_summary.md").read_text()
    assert "3 scenes: 3 done, 0 failed" in markdown and "| plain | - | done | 12 |" in markdown
    assert "| T34ABC_20230202T100000 | 2023-02-02 | done |" in markdown  # the sensing date from the product id
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == sorted(
        [".minescan.lock", "journal.sqlite", "run_summary.json", "run_summary.md", "report.md", "report.html"]
        + [f"{pid}.{ext}" for pid in scenes for ext in ("gpkg", "png")]
    )
    # Each result holds the areas its scan could not see (its swath's nodata edge) as a second layer.
    for pid in scenes:
        assert [name for name, _ in pyogrio.list_layers(out / f"{pid}.gpkg")] == [pid, "unobserved"]


def test_corrupt_scenes_are_isolated(scenes, square_model, make_scene, tmp_path, capsys):
    out = tmp_path / "results"
    corrupt = tmp_path / "corrupt.tif"
    corrupt.write_bytes(b"II*\x00" + np.random.default_rng(0).bytes(5000))
    truncated, _ = make_scene("truncated.tif", width=2000, height=2000, objects=5)
    truncated.write_bytes(truncated.read_bytes()[:200_000])  # opens, then fails while reading tiles
    (tmp_path / "empty.SAFE").mkdir()
    plain, truth = scenes["plain"]
    argv = ["scan", str(corrupt), str(plain), str(truncated), str(tmp_path / "empty.SAFE"), "--model", str(square_model), "--out-dir", str(out), *TILING]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and captured.err.startswith("minescan: error: 3 of 4 scenes failed (corrupt, truncated, empty)")
    assert_matches(out / "plain.gpkg", truth)
    states = journal(out)
    assert states["plain"][0] == "done"
    assert states["corrupt"][0] == "failed" and "corrupt.tif: not a readable raster" in states["corrupt"][2]
    assert states["truncated"][0] == "failed" and "truncated.tif: read failed" in states["truncated"][2]
    assert "empty.SAFE: no MTD_MSIL2A.xml or MTD_MSIL1C.xml" in states["empty"][2]
    summary = json.loads((out / "run_summary.json").read_text())
    assert [s["status"] for s in summary["scenes"]] == ["failed", "done", "failed", "failed"]
    assert "corrupt.tif: not a readable raster" in (out / "run_summary.md").read_text()
    assert not (out / "corrupt.gpkg").exists() and not leftovers(out)


def test_rerun_skips_done_scenes_and_redoes_changed_ones(scenes, square_model, od_api_like_model, tmp_path, capsys):
    out = tmp_path / "results"
    plain, truth = scenes["plain"]
    args = ["scan", str(plain), str(scenes["T34ABC_20230202T100000"][0]), "--out-dir", str(out), *TILING]
    assert main([*args, "--model", str(square_model)]) == 0
    first = (out / "plain.gpkg").stat().st_mtime_ns
    capsys.readouterr()
    assert main([*args, "--model", str(square_model)]) == 0
    assert capsys.readouterr().out.count("done in an earlier run, skipped") == 2
    assert (out / "plain.gpkg").stat().st_mtime_ns == first
    assert main([*args, "--model", str(square_model), "--score-threshold", "0.6"]) == 0  # settings changed
    assert main([*args, "--model", str(od_api_like_model), "--score-threshold", "0.6"]) == 0  # model changed
    assert main([*args, "--model", str(od_api_like_model), "--score-threshold", "0.6", "--batch", "1"]) == 0  # speed only
    assert journal(out)["plain"][:2] == ("done", 3)
    assert_matches(out / "plain.gpkg", truth)


def test_result_renamed_but_not_journaled_is_redone_once(scenes, square_model, tmp_path):
    """What kill -9 between the result's rename and the journal commit leaves behind."""
    out = tmp_path / "results"
    plain, truth = scenes["plain"]
    args = ["scan", str(plain), "--model", str(square_model), "--out-dir", str(out), *TILING]
    assert main(args) == 0
    with sqlite3.connect(out / "journal.sqlite") as db:
        db.execute("UPDATE scenes SET state = 'running'")
    (out / ".plain.4242.tmp.gpkg").write_bytes(b"half a geopackage")
    assert main(args) == 0
    assert journal(out)["plain"][:2] == ("done", 2)
    assert_matches(out / "plain.gpkg", truth)
    assert not leftovers(out)


def test_ctrl_c_stops_the_run_and_the_same_command_resumes(scenes, square_model, tmp_path, monkeypatch, capsys):
    import minescan.runs.batch as batch

    out = tmp_path / "results"
    inputs = [str(p) for p, _ in scenes.values()]
    args = ["scan", *inputs, "--model", str(square_model), "--out-dir", str(out), *TILING]
    scan = batch.Scanner.scan
    calls = []

    def interrupted_on_the_second(self, plan, *, progress=None, **k):
        calls.append(1)
        if len(calls) == 2:
            progress(3, plan.tiles)
            raise KeyboardInterrupt
        return scan(self, plan, progress=progress, **k)

    monkeypatch.setattr(batch.Scanner, "scan", interrupted_on_the_second)
    assert main(args) == 130
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["interrupted"] and [s["status"] for s in summary["scenes"]] == ["done", "pending", "pending"]
    assert [state for state, _, _ in journal(out).values()] == ["done", "running"]
    monkeypatch.undo()
    capsys.readouterr()
    assert main(args) == 0
    assert "1/3" in capsys.readouterr().out and all(state == "done" for state, _, _ in journal(out).values())


def test_kill_9_mid_run_then_resume_gives_one_result_per_scene(square_model, tmp_path):
    spec = dict(width=2000, height=2000, objects=12)
    truths = {}
    for i in range(5):
        path = tmp_path / "in" / f"scene{i}.tif"
        path.parent.mkdir(exist_ok=True)
        truths[f"scene{i}"] = write_scene(path, SceneSpec(seed=10 + i, **spec))
    out = tmp_path / "results"
    command = [sys.executable, "-m", "minescan", "scan", *(str(tmp_path / "in" / f"{s}.tif") for s in truths),
               "--model", str(square_model), "--out-dir", str(out)]
    run = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if sum(s == "done" for s, _, _ in journal(out).values()) >= 2:
                break
        except sqlite3.OperationalError:  # the run has not created the journal (or its table) yet
            pass
        time.sleep(0.01)
    run.send_signal(signal.SIGKILL)
    run.wait()
    before = journal(out)
    assert 2 <= sum(s == "done" for s, _, _ in before.values()) < 5, before
    resumed = subprocess.run(command, capture_output=True, text=True)
    assert resumed.returncode == 0 and resumed.stderr == "", resumed.stderr
    after = journal(out)
    assert set(after) == set(truths) and all(state == "done" for state, _, _ in after.values())
    for name, (state, attempts, _) in before.items():
        if state == "done":
            assert after[name][1] == attempts == 1  # finished before the kill: not scanned again
    assert resumed.stdout.count("done in an earlier run, skipped") == sum(s == "done" for s, _, _ in before.values())
    assert sorted(p.name for p in out.glob("*.gpkg")) == sorted(f"{s}.gpkg" for s in truths)
    for name, truth in truths.items():
        assert_matches(out / f"{name}.gpkg", truth)
    assert not leftovers(out)


def _kill_when(command, out, ready, timeout=60.0):
    """Start the run, SIGKILL it once ``ready(states)`` holds; return the journal rows at the kill."""
    run = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, rows = time.monotonic() + timeout, {}
    while time.monotonic() < deadline and run.poll() is None:
        try:
            rows = journal(out)
            if ready({k: v[0] for k, v in rows.items()}):
                break
        except sqlite3.OperationalError:  # no journal (or its table) yet
            pass
        time.sleep(0.005)
    run.send_signal(signal.SIGKILL)
    run.wait()
    return rows


def test_mixed_inputs_killed_twice_then_resumed_give_each_result_once(square_model, tmp_path):
    # The acceptance run of the overnight feature: a .SAFE, band files, a stacked GeoTIFF, a STAC item
    # and a corrupt file; kill -9 twice mid-run, then the same command finishes the night.
    spec = dict(width=1800, height=1600, objects=10)
    inputs, truths = [], {}
    safe, truths_safe = write_safe(tmp_path / "in", SceneSpec(seed=21, **spec))
    inputs.append(safe)
    truths[safe.stem] = truths_safe
    _, truths["T35XYZ_20230303T100000"] = write_band_files(tmp_path / "in" / "bands", SceneSpec(seed=22, **spec), prefix="T35XYZ_20230303T100000_")
    inputs.append(tmp_path / "in" / "bands")
    plain = tmp_path / "in" / "stack.tif"
    truths["stack"] = write_scene(plain, SceneSpec(seed=23, **spec))
    inputs.append(plain)
    files, truths["S2B_35XYZ_20230404_0_L2A"] = write_band_files(tmp_path / "in" / "cog", SceneSpec(seed=24, **spec))
    inputs.append(write_stac_item(tmp_path / "in" / "item.json", files, item_id="S2B_35XYZ_20230404_0_L2A"))
    corrupt = tmp_path / "in" / "broken.tif"
    corrupt.write_bytes(b"II*\x00" + np.random.default_rng(1).bytes(4000))
    inputs.append(corrupt)
    out = tmp_path / "results"
    command = [sys.executable, "-m", "minescan", "scan", *map(str, inputs), "--model", str(square_model), "--out-dir", str(out)]

    first = _kill_when(command, out, lambda st: list(st.values()).count("done") >= 1 and "running" in st.values())
    second = _kill_when(command, out, lambda st: list(st.values()).count("done") >= 3 and "running" in st.values())
    done_at = [sum(v[0] == "done" for v in rows.values()) for rows in (first, second)]
    assert 1 <= done_at[0] < done_at[1] < 4, (first, second)
    finished = subprocess.run(command, capture_output=True, text=True)
    assert finished.returncode == 1 and finished.stderr.startswith("minescan: error: 1 of 5 scenes failed (broken)"), finished.stderr

    after = journal(out)
    assert {k: v[0] for k, v in after.items()} == {**{name: "done" for name in truths}, "broken": "failed"}
    for rows in (first, second):
        for name, (state, attempts, _) in rows.items():
            if state == "done":
                assert after[name][1] == attempts  # finished before a kill: never scanned again
    for name, truth in truths.items():
        assert_matches(out / f"{name}.gpkg", truth)
        assert (out / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in out.glob("*.gpkg")) == sorted(f"{name}.gpkg" for name in truths)
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["totals"]["done"] == 4 and summary["totals"]["failed"] == 1
    assert "broken.tif: not a readable raster" in (out / "run_summary.md").read_text()
    assert not leftovers(out)


def test_two_runs_cannot_share_a_folder(scenes, square_model, tmp_path, capsys):
    out = tmp_path / "results"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'ab'); "
                               "fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(30)", str(out / ".minescan.lock")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(["scan", str(scenes["plain"][0]), "--model", str(square_model), "--out-dir", str(out)]) == 1
        assert "another minescan run is writing there" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()


def test_usage_errors(scenes, square_model, tmp_path, capsys):
    plain = str(scenes["plain"][0])
    assert main(["scan", plain, plain, "--model", str(square_model), "--out", str(tmp_path / "r.gpkg")]) == 1
    assert "use --out-dir" in capsys.readouterr().err
    assert main(["scan", plain, str(scenes["T34ABC_20230202T100000"][0]), "--model", str(square_model)]) == 1
    assert "several scenes or --manifest need --out-dir DIR" in capsys.readouterr().err
    assert main(["scan", "--model", str(square_model), "--out-dir", str(tmp_path / "r")]) == 1
    assert "no scenes given" in capsys.readouterr().err


def test_same_product_id_from_two_folders(square_model, tmp_path):
    truths = []
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        truths.append(write_scene(tmp_path / folder / "scene.tif", SceneSpec(seed=len(truths), **SMALL)))
    out = tmp_path / "results"
    assert main(["scan", str(tmp_path / "a" / "scene.tif"), str(tmp_path / "b" / "scene.tif"), "--model", str(square_model),
                 "--out-dir", str(out), "--quicklook-size", "0", *TILING]) == 0
    results = sorted(out.glob("scene-*.gpkg"))
    assert len(results) == 2 and not list(out.glob("*.png"))
    summary = json.loads((out / "run_summary.json").read_text())
    for scene, truth in zip(summary["scenes"], truths):
        assert_matches(scene["outcome"]["result"], truth)
