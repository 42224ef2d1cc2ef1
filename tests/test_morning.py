"""The morning run: ``scan today's products --out-dir today --baseline last_week --concessions cadastre.gpkg``.

Two dates of the known-answer square scenes (testkit.square_detector finds every rectangle exactly), written as
L2A products with SCL clouds (minescan.synthetic.pairs): objects appear, grow and vanish between the dates, one
sits under a cloud at each date, and a cadastre covers the "legal" (blue, class 2) ones.  The run must label every
site exactly as the generator planned it, list the new sites outside concessions first, and chip them.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pyogrio
import pytest
import shapely

from minescan.synthetic.pairs import plan_square_pair, write_pair
from minescan.synthetic.scene import SceneSpec

TIMEOUT = 300


def _minescan(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "minescan", *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=TIMEOUT)


@pytest.fixture(scope="module")
def morning(tmp_path_factory, square_model):
    """Both runs done: (folder, files of the pair, the square pair)."""
    folder = tmp_path_factory.mktemp("morning")
    pair = plan_square_pair(SceneSpec(width=1400, height=1100, objects=14, seed=21), new=3, grown=2, vanished=2, clouded=1,
                            clouded_before=1, random_clouds=2)
    files = write_pair(folder / "pair", pair, concessions_crs="EPSG:4326")
    before = _minescan("scan", files.before, "--model", square_model, "--out-dir", "last_week", "--concessions",
                       files.cadastre, cwd=folder)
    assert before.returncode == 0, before.stderr
    after = _minescan("scan", files.after, "--model", square_model, "--out-dir", "today", "--baseline", "last_week",
                      "--concessions", files.cadastre, cwd=folder)
    assert after.returncode == 0, after.stderr
    return folder, files, pair, after.stdout


def _changes(path: Path) -> list[dict]:
    meta, _, wkb, fields = pyogrio.raw.read(str(path), layer="changes")
    rows = [dict(zip(meta["fields"], values)) for values in zip(*fields)]
    for row, geometry in zip(rows, shapely.from_wkb(wkb)):
        row["geometry"] = geometry
    return rows


def test_every_site_is_labelled_as_planned(morning):
    folder, files, pair, stdout = morning
    rows = _changes(folder / "today" / "changes.gpkg")
    expected = json.loads(files.expected.read_text())["changes"]
    assert len(rows) == len(expected)
    for change in expected:
        bounds = change["after_bounds"] or change["before_bounds"]
        centre = shapely.Point((bounds[0] + bounds[2]) / 2, (bounds[1] + bounds[3]) / 2)
        found = [r for r in rows if r["geometry"].contains(centre)]
        assert len(found) == 1, change
        assert found[0]["change"] == change["label"], (change, found[0])
    labels = [c["label"] for c in expected]
    assert {"new", "gone", "grown", "unknown", "unchanged"} <= set(labels)
    # A site under clouds at either date is unknown, never gone, and says why.
    for row in rows:
        if row["change"] == "unknown":
            assert row["reason"].startswith(("under clouds at 2026-", "flagged (mostly masked) at 2026-")), row
    counts = {label: labels.count(label) for label in set(labels)}
    assert f"{counts['new']} new, {counts['grown']} grown" in stdout


def test_grown_sites_carry_both_areas(morning):
    folder, _, _, _ = morning
    for row in _changes(folder / "today" / "changes.gpkg"):
        if row["change"] == "grown":
            assert row["area_m2"] >= 2 * row["old_area_m2"] > 0
            assert row["area_change_m2"] == pytest.approx(row["area_m2"] - row["old_area_m2"])
        if row["change"] == "new":
            assert math.isnan(row["old_area_m2"]) and row["area_m2"] > 0


def test_the_report_lists_new_sites_outside_concessions_first_with_chips(morning):
    folder, _, _, _ = morning
    today = folder / "today"
    rows = _changes(today / "changes.gpkg")
    alerts = [r for r in rows if r["change"] == "new" and r["inside"] == 0]
    assert alerts, "the pair places new sites outside every concession"
    assert all(r["site"] <= len(alerts) for r in alerts)  # numbered first
    report = (today / "report.md").read_text()
    first = report.index("## New sites outside every concession")
    assert all(report.index(heading) > first for heading in ("## Gone", "## Unknown", "## Grown") if heading in report)
    for row in alerts:
        assert f"### {row['site']}. " in report and f"{row['lat']:.6f}" in report
        chip = today / "chips" / f"site-{row['site']:03d}.png"
        assert chip.is_file() and f"chips/{chip.name}" in report
    html = (today / "report.html").read_text()
    assert "<table>" in html and 'src="chips/site-001.png"' in html


def test_a_rerun_with_another_baseline_recompares_without_scanning(morning, square_model):
    folder, files, _, _ = morning
    again = _minescan("scan", files.after, "--model", square_model, "--out-dir", "today", "--baseline", "today_copy_missing",
                      cwd=folder)
    assert again.returncode != 0 and "baseline today_copy_missing: not a folder" in again.stderr
    same = _minescan("scan", files.after, "--model", square_model, "--out-dir", "today2", "--baseline", "today", cwd=folder)
    assert same.returncode == 0, same.stderr
    # Today against itself: every site unchanged (or unknown where flagged under clouds), nothing new or gone.
    labels = {r["change"] for r in _changes(folder / "today2" / "changes.gpkg")}
    assert labels <= {"unchanged", "unknown"}


def test_compare_command_gives_the_same_labels(morning):
    folder, _, _, _ = morning
    old = next((folder / "last_week").glob("S2B_*.gpkg"))
    new = next((folder / "today").glob("S2B_*.gpkg"))
    done = _minescan("compare", old, new, "--out", "by_hand.geojson", cwd=folder)
    assert done.returncode == 0, done.stderr
    by_hand = json.loads((folder / "by_hand.geojson").read_text())["features"]
    run = _changes(folder / "today" / "changes.gpkg")
    assert sorted(f["properties"]["change"] for f in by_hand) == sorted(r["change"] for r in run)


def test_baseline_errors_come_before_any_scanning(morning, square_model, tmp_path):
    folder, files, _, _ = morning
    not_a_run = tmp_path / "empty"
    not_a_run.mkdir()
    done = _minescan("scan", files.after, "--model", square_model, "--out-dir", tmp_path / "out", "--baseline", not_a_run,
                     cwd=tmp_path)
    assert done.returncode != 0 and "no run_summary.json" in done.stderr and not (tmp_path / "out").exists()
    single = _minescan("scan", files.after, "--model", square_model, "--out", tmp_path / "x.gpkg", "--baseline",
                       folder / "last_week", cwd=tmp_path)
    assert single.returncode != 0 and "give --out-dir DIR" in single.stderr
    assert len(single.stderr.strip().splitlines()) == 1


def test_the_change_demo_finds_what_the_generator_planned(tmp_path, capsys):
    """``minescan demo --change`` with the shipped detector: the planned labels, found by a real (imperfect) model."""
    from minescan.demo import run_change_demo

    report = run_change_demo(tmp_path / "morning", seed=2, size=(1536, 1536))
    assert report.is_file() and (report.parent / "report.md").is_file()
    planned = json.loads((tmp_path / "morning" / "products" / "expected.json").read_text())["changes"]
    rows = _changes(report.parent / "changes.gpkg")
    right = 0
    for change in planned:
        bounds = change["after_bounds"] or change["before_bounds"]
        centre = shapely.Point((bounds[0] + bounds[2]) / 2, (bounds[1] + bounds[3]) / 2)
        right += [r["change"] for r in rows if r["geometry"].contains(centre)] == [change["label"]]
    # 12 of the 13 planned sites on this seed (2026-12-04): the detector misses the site under a cloud at both dates.
    assert right >= 0.9 * len(planned)
    assert "planned by the generator" in capsys.readouterr().out


def test_a_change_demo_too_small_for_its_pair_says_so(tmp_path):
    done = _minescan("demo", "--change", "--size", "512x512", "--seed", "1", "--out-dir", tmp_path / "m", cwd=tmp_path)
    assert done.returncode != 0 and len(done.stderr.strip().splitlines()) == 1
    assert "--size 512x512 (seed 1):" in done.stderr and "try a larger scene" in done.stderr


def test_a_single_scene_says_its_clear_share_and_what_lies_outside_concessions(morning, square_model, tmp_path):
    folder, files, pair, _ = morning
    done = _minescan("scan", files.after, "--model", square_model, "--out", tmp_path / "one.gpkg", "--concessions",
                     files.cadastre, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert "clear " in lines[1] and "detection(s) flagged" in lines[1]
    meta, _, _, fields = pyogrio.raw.read(str(tmp_path / "one.gpkg"), layer=0)
    column = dict(zip(meta["fields"], fields))
    outside = {}
    for label, inside in zip(column["class_label"], column["inside"]):
        if inside == 0:
            outside[label] = outside.get(label, 0) + 1
    said = ", ".join(f"{k} {v}" for k, v in sorted(outside.items())) or "none"
    assert lines[2].endswith(f"outside every concession: {said}") and outside.get("blue_square", 0) == 0


def test_without_a_baseline_only_detections_outside_concessions_are_chipped(morning, square_model, tmp_path):
    folder, files, _, _ = morning
    done = _minescan("scan", files.after, "--model", square_model, "--out-dir", tmp_path / "plain", "--concessions",
                     files.cadastre, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = next((tmp_path / "plain").glob("S2B_*.gpkg"))
    meta, _, _, fields = pyogrio.raw.read(str(result), layer=0)
    outside = int((dict(zip(meta["fields"], fields))["inside"] == 0).sum())
    assert 0 < outside < len(fields[0])
    assert len(list((tmp_path / "plain" / "chips").glob("site-*.png"))) == outside
    report = (tmp_path / "plain" / "report.md").read_text()
    assert f"## Detections outside every concession ({outside})" in report and "## Other detections" in report
