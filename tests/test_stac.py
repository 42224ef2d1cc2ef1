"""STAC on pystac and scenes from a STAC API search, against a real STAC API served on loopback (testkit.stac_api).

The API serves items made from the project's own scenes: one Sentinel-2-like
mining scene (for the demo detector) and small rectangle scenes, as band
files whose bytes GDAL reads through /vsicurl/ with HTTP range requests.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import httpx
import numpy as np
import pytest

from minescan import Scanner
from minescan.cli import main
from minescan.demo import shipped_model
from minescan.raster.sources.resolve import resolve
from minescan.raster.sources.source import SourceError
from minescan.raster.sources.stac import gdal_href, is_item_url
from minescan.raster.sources.stac_search import SearchValueError, StacSearch, check_datetime, parse_bbox, search_scenes
from minescan.results.evaluation import compare
from minescan.synthetic.mining import MiningSpec, write_mining_scene
from minescan.synthetic.scene import SceneSpec
from testkit.products import write_band_files
from testkit.stac_api import StacApi, publish_item, requests_seen, split_bands

L2A = "sentinel-2-l2a"
BBOX = "12.0,44.5,13.0,45.5"  # around UTM 33N x 300-320 km, y 5000 km; the "far" scene lies 400 km east
DATES = "2024-06-01/2024-08-31"
FOUND = ["S2A_MINE_20240610", "S2B_NEAR_20240715", "S2B_LATE_20240820"]  # in the API's order
ORIGIN_Y = 5000040.0


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """(data root, mining layout): a mining scene and six rectangle scenes published as items, in this API order.

    Of the seven, three answer the search (collection, BBOX, DATES, cloud < 20):
    one is left out by cloud, one by date, one by bbox, one by collection.
    """
    root = tmp_path_factory.mktemp("stac") / "data"
    api = StacApi(root, page_size=2)
    spec = MiningSpec(width=768, height=768, seed=11, illegal_density=6.0, legal_density=3.0, epsg=32633,
                      origin=(300000.0, ORIGIN_Y))
    scene = root.parent / "mine.tif"
    layout = write_mining_scene(scene, spec)
    publish_item(api, "mine", split_bands(scene, root / "mine"), item_id=FOUND[0], collection=L2A,
                 when="2024-06-10T10:20:31Z", cloud=3.5)
    others = [  # (folder, id, collection, datetime, cloud, x origin)
        ("cloudy", "S2A_CLOUDY_20240701", L2A, "2024-07-01T10:20:31Z", 60.0, 300000.0),
        ("near", FOUND[1], L2A, "2024-07-15T10:20:31Z", 12.0, 310000.0),
        ("old", "S2B_OLD_20230715", L2A, "2023-07-15T10:20:31Z", 1.0, 300000.0),
        ("far", "S2A_FAR_20240720", L2A, "2024-07-20T10:20:31Z", 2.0, 700000.0),
        ("l1c", "S2B_L1C_20240725", "sentinel-2-l1c", "2024-07-25T10:20:31Z", 2.0, 300000.0),
        ("late", FOUND[2], L2A, "2024-08-20T10:20:31Z", 19.9, 320000.0),
    ]
    for seed, (folder, item_id, collection, when, cloud, x) in enumerate(others, start=1):
        files, _ = write_band_files(root / folder, SceneSpec(width=640, height=640, objects=4, seed=seed, origin=(x, ORIGIN_Y)))
        publish_item(api, folder, files, item_id=item_id, collection=collection, when=when, cloud=cloud)
    return api, layout


@pytest.fixture(scope="module")
def api_url(site):
    with site[0].serve() as url:
        yield url


@pytest.fixture(scope="module")
def demo_scanner():
    return Scanner(shipped_model())


def _fails(capsys, argv, message):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("minescan: error: "), lines
    assert message in lines[0], lines[0]
    return lines[0]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- (a) the search ----------------------------------------------------------------------------------------------

def test_a_search_finds_exactly_the_matching_items_in_order(api_url, tmp_path):
    search = StacSearch(api_url, bbox=parse_bbox(BBOX), datetime=DATES, max_cloud=20)
    paths = search_scenes(search, tmp_path / "items")
    assert [p.name for p in paths] == [f"{i}.json" for i in FOUND]
    assert all(p.is_absolute() and p.parent == tmp_path / "items" for p in paths)
    pages = [r for r in requests_seen(api_url) if r[1] == "/search"]
    assert len(pages) >= 2 and {r[0] for r in pages} == {"POST"}  # three items, two per page: pystac-client paged
    item = json.loads(paths[1].read_text())  # the API answers relative hrefs; the saved item has them absolute
    assert item["id"] == FOUND[1] and item["assets"]["red"]["href"] == f"{api_url}/data/near/T33UUP_20230101T100000_B04_10m.tif"
    stamps = [p.stat().st_mtime_ns for p in paths]
    assert search_scenes(search, tmp_path / "items") == paths  # same search, same paths, files left as they were
    assert [p.stat().st_mtime_ns for p in paths] == stamps
    assert [p.name for p in search_scenes(StacSearch(api_url, bbox=parse_bbox(BBOX), datetime=DATES, max_cloud=20,
                                                     max_items=2), tmp_path / "two")] == [f"{i}.json" for i in FOUND[:2]]
    # each filter alone: cloud lets the cloudy item out, the dates the old one, the bbox the far one
    assert len(search_scenes(StacSearch(api_url, bbox=parse_bbox(BBOX), datetime=DATES), tmp_path / "b")) == 4
    assert len(search_scenes(StacSearch(api_url, bbox=parse_bbox(BBOX), max_cloud=20), tmp_path / "c")) == 4
    assert len(search_scenes(StacSearch(api_url, datetime=DATES, max_cloud=20), tmp_path / "d")) == 4


def test_the_api_pages_by_get_too(api_url):
    found, url = [], f"{api_url}/search?collections={L2A}&bbox={BBOX}&datetime={DATES}&limit=2"
    url += "&query=" + json.dumps({"eo:cloud_cover": {"lt": 20}})
    while url:
        page = httpx.get(url, timeout=10).json()
        found += [feature["id"] for feature in page["features"]]
        url = next((link["href"] for link in page["links"] if link["rel"] == "next"), None)
    assert found == FOUND


# --- (b) an item by URL ------------------------------------------------------------------------------------------

def test_an_item_read_by_url_scans_like_the_same_item_read_from_its_file(site, api_url, demo_scanner, tmp_path):
    api, layout = site
    local = api.data_root / "mine" / "item.json"
    assert json.loads(local.read_text())["assets"]["red"]["href"] == "T30NVL_20240601T100000_B04_10m.tif"  # relative
    url = f"{api_url}/data/mine/item.json"
    assert is_item_url(url) and is_item_url(f"{api_url}/collections/{L2A}/items/{FOUND[0]}")
    assert not is_item_url(f"{api_url}/data/mine/T30NVL_20240601T100000_B04_10m.tif")
    source = resolve(url, tmp_path / "vrt")
    assert (source.kind, source.product_id, source.nodata) == ("stac", FOUND[0], 0.0)
    assert f"/vsicurl/{api_url}/data/mine/T30NVL_20240601T100000_B04_10m.tif" in source.dataset.read_text()

    by_url = demo_scanner.scan(url).detections
    by_file = demo_scanner.scan(local).detections
    assert len(by_file.boxes) > 0
    np.testing.assert_array_equal(by_url.boxes, by_file.boxes)
    np.testing.assert_array_equal(by_url.scores, by_file.scores)
    np.testing.assert_array_equal(by_url.classes, by_file.classes)
    truth = layout.truth()
    agreement = compare(by_url.boxes, by_url.scores, by_url.classes, truth.boxes, truth.classes)
    assert agreement.matched >= 1, agreement.format()
    ranges = [r for r in requests_seen(api_url) if r[1].startswith("/data/mine/") and r[3]]
    assert ranges and all(r[4] == 206 for r in ranges)  # GDAL read the bands by HTTP range requests

    # the API's own item URL is an item too; its hrefs are relative to /collections/<id>/items/<id>
    api_source = resolve(f"{api_url}/collections/{L2A}/items/{FOUND[0]}", tmp_path / "vrt")
    assert f"/vsicurl/{api_url}/data/mine/T30NVL_20240601T100000_B04_10m.tif" in api_source.dataset.read_text()


def test_item_urls_that_cannot_be_read(site, api_url, tmp_path):
    with pytest.raises(SourceError, match=r"/data/none/item.json: not a readable STAC item \(.*404"):
        resolve(f"{api_url}/data/none/item.json", tmp_path)
    with pytest.raises(SourceError, match=r"/items/none: not a readable STAC item \(.*404"):
        resolve(f"{api_url}/collections/{L2A}/items/none", tmp_path)
    (site[0].data_root / "catalog.json").write_text(json.dumps({"type": "Catalog", "id": "c", "links": []}))
    with pytest.raises(SourceError, match=r"catalog.json: not a STAC item \(expected a GeoJSON Feature with 'assets'\)"):
        resolve(f"{api_url}/data/catalog.json", tmp_path)
    assert gdal_href("B04.tif", "https://example.com/a/item.json") == "/vsicurl/https://example.com/a/B04.tif"


# --- (c) the command line ----------------------------------------------------------------------------------------

def test_scan_stac_search_runs_each_found_item_and_the_same_command_resumes(api_url, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["scan", "--stac-search", api_url, "--collection", L2A, "--bbox", BBOX, "--datetime", DATES,
            "--max-cloud", "20", "--out-dir", str(out), "--model", str(shipped_model())]
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    assert "3/3 scenes done, 0 failed" in stdout, stdout
    assert sorted(p.name for p in out.glob("*.gpkg")) == sorted(f"{i}.gpkg" for i in FOUND)
    items = out / "sources" / "stac-items"
    assert sorted(p.name for p in items.iterdir()) == sorted(f"{i}.json" for i in FOUND)
    summary = json.loads((out / "run_summary.json").read_text())
    assert [s["product_id"] for s in summary["scenes"]] == FOUND and {s["status"] for s in summary["scenes"]} == {"done"}

    assert main(argv) == 0
    stdout = capsys.readouterr().out
    assert stdout.count("done in an earlier run, skipped") == 3, stdout


def test_a_dry_run_searches_without_a_run_folder(api_url, capsys):
    assert main(["scan", "--stac-search", api_url, "--bbox", BBOX, "--datetime", DATES, "--max-cloud", "20",
                 "--dry-run", "--model", str(shipped_model())]) == 0
    stdout = capsys.readouterr().out
    assert all(f"{i}.json" in stdout for i in FOUND) and "[3/3]" in stdout


# --- (d) error lines ---------------------------------------------------------------------------------------------

def test_search_errors_are_one_line(api_url, tmp_path, capsys):
    model = ["--model", str(shipped_model()), "--out-dir", str(tmp_path / "run")]
    closed = f"http://127.0.0.1:{_closed_port()}"
    _fails(capsys, ["scan", "--stac-search", closed, *model], f"STAC API {closed}: cannot be reached (")
    _fails(capsys, ["scan", "--stac-search", f"{api_url}/data/mine/item.json", *model], "item.json: not a STAC API (")
    _fails(capsys, ["scan", "--stac-search", f"{api_url}/no-search/", *model],
           "not a STAC API with item search (its landing page does not declare the item-search conformance class)")
    _fails(capsys, ["scan", "--stac-search", api_url, "--bbox", "12,44.5,13", *model],
           "--bbox '12,44.5,13': expected 4 numbers west,south,east,north")
    _fails(capsys, ["scan", "--stac-search", api_url, "--bbox", "12,45.5,13,44.5", *model], "south must be below north")
    _fails(capsys, ["scan", "--stac-search", api_url, "--datetime", "2024-13-01/2024-08-31", *model], "--datetime '2024-13-01/2024-08-31'")
    _fails(capsys, ["scan", "--stac-search", api_url, "--max-cloud", "120", *model], "--max-cloud 120.0: a cloud cover in percent, in [0, 100]")
    _fails(capsys, ["scan", "--stac-search", api_url, "--max-items", "0", *model], "--max-items 0: at least 1 item")
    line = _fails(capsys, ["scan", "--stac-search", api_url, "--bbox", BBOX, "--datetime", "2020-01-01/2020-12-31", *model],
                  f"STAC API {api_url}: no items found for collection {L2A}, bbox 12,44.5,13,45.5, datetime 2020-01-01/2020-12-31")
    assert "a run needs at least one scene" in line
    _fails(capsys, ["scan", "--stac-search", api_url, "--model", str(shipped_model())], "--stac-search scans a run: give --out-dir")
    _fails(capsys, ["scan", "--bbox", BBOX, *model], "--bbox selects items of a STAC API search: give --stac-search URL")
    assert not (tmp_path / "run").exists()  # nothing to scan, nothing written


def test_search_values_are_checked_in_the_library_in_its_own_words():
    with pytest.raises(SearchValueError, match=r"^bbox '1,2,x': expected 4 numbers"):
        parse_bbox("1,2,x")
    assert parse_bbox("170,-10,-170,10") == (170.0, -10.0, -170.0, 10.0)  # across the antimeridian
    with pytest.raises(SearchValueError, match="west and east must lie in"):
        parse_bbox("-200,0,10,10")
    assert check_datetime("2024-06-01/..") == "2024-06-01/.."
    assert check_datetime("2024-06-01T00:00:00Z / 2024-08-31T23:59:59+02:00") == "2024-06-01T00:00:00Z/2024-08-31T23:59:59+02:00"
    assert check_datetime("2024-06") == "2024-06"
    for bad, why in [("2024-08-31/2024-06-01", "starts after it ends"), ("../..", "at least one end"),
                     ("2024-02-30", "is not a date"), ("June", "RFC 3339"), ("a/b/c", "RFC 3339")]:
        with pytest.raises(SearchValueError, match=why):
            check_datetime(bad)
    with pytest.raises(SearchValueError, match=r"^url 'ftp://x': a STAC API is named by its http"):
        StacSearch("ftp://x")
    with pytest.raises(SearchValueError, match=r"^max_cloud 101"):
        StacSearch("http://x", max_cloud=101)
