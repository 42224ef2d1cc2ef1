"""``minescan serve``: the real server process on a free loopback port, real HTTP clients (httpx, tritonclient).

The served model is the known-answer square detector, so every answer can be
checked: infer results against a direct call of the same model, scene jobs
against the scene's truth.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from minescan.engine.onnxruntime_backend import OnnxRuntimeDetector
from minescan.model.contract import OUTPUT_NAMES
from minescan.synthetic.scene import SceneSpec, write_scene
from testkit.square_detector import save_square_detector

TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A ``minescan serve`` process; ``start()`` waits until it is ready."""

    def __init__(self, folder: Path, model: Path, *extra: str) -> None:
        self.folder, self.model, self.extra = folder, model, extra
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> "Server":
        log = open(self.folder / f"server-{time.time_ns()}.log", "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "minescan", "serve", "--model", f"squares={self.model}", "--port", str(self.port),
             "--data-root", str(self.folder / "data"), "--state", str(self.folder / "state"),
             "--token-file", str(self.folder / "token"), *self.extra],
            stdout=log, stderr=subprocess.STDOUT, cwd=self.folder)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (self.folder / log.name).read_text()
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("the server did not become ready")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        return self.process.wait(timeout=timeout)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve")
    (folder / "data").mkdir()
    (folder / "token").write_text(TOKEN + "\n")
    model = save_square_detector(folder / "squares.onnx")
    truth = write_scene(folder / "data" / "scene.tif", SceneSpec(width=1400, height=1100, objects=25, seed=11))
    return folder, model, truth


@pytest.fixture(scope="module")
def server(site):
    folder, model, _ = site
    server = Server(folder, model, "--max-body-mb", "2", "--max-batch", "8", "--batch-delay-ms", "5").start()
    yield server
    server.stop()


def _tiles(seed: int, count: int = 2, size: int = 64) -> np.ndarray:
    """Tiles with a few bright rectangles: the detector's known answers."""
    rng = np.random.default_rng(seed)
    tiles = rng.integers(0, 60, (count, size, size, 3), dtype=np.uint8)
    for tile in tiles:
        for _ in range(3):
            y, x = rng.integers(0, size - 12, 2)
            h, w = rng.integers(4, 12, 2)
            tile[y : y + h, x : x + w] = (250, 200, 40) if rng.random() < 0.5 else (40, 200, 250)
    return tiles


def _direct(model: Path, tiles: np.ndarray) -> dict[str, np.ndarray]:
    return OnnxRuntimeDetector(model, threads=1, workers=1).run_contract(tiles)


def _binary_infer(client, tiles: np.ndarray):
    import tritonclient.http as triton

    given = triton.InferInput("input_tensor", list(tiles.shape), "UINT8")
    given.set_data_from_numpy(tiles, binary_data=True)
    outputs = [triton.InferRequestedOutput(name, binary_data=True) for name in OUTPUT_NAMES]
    result = client.infer("squares", [given], outputs=outputs, headers=dict(AUTH))  # it adds to the dict
    return {name: result.as_numpy(name) for name in OUTPUT_NAMES}


def test_tritonclient_talks_to_it_as_to_triton_and_answers_equal_direct_calls(server, site):
    import tritonclient.http as triton

    _, model, _ = site
    client = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("squares", headers=dict(AUTH))
    meta = client.get_model_metadata("squares", headers=dict(AUTH))
    assert meta["inputs"] == [{"name": "input_tensor", "datatype": "UINT8", "shape": [-1, -1, -1, 3]}]
    assert [o["name"] for o in meta["outputs"]] == list(OUTPUT_NAMES)
    tiles = _tiles(1, count=3)
    served, direct = _binary_infer(client, tiles), _direct(model, tiles)
    assert int(direct["num_detections"].sum()) >= 6  # the tiles hold rectangles to find
    for name in OUTPUT_NAMES:
        np.testing.assert_array_equal(served[name], direct[name])
    # JSON tensors, some outputs, as curl would send them
    body = {"id": "r1", "inputs": [{"name": "input_tensor", "datatype": "UINT8", "shape": list(tiles.shape),
                                    "data": tiles.ravel().tolist()}], "outputs": [{"name": "detection_boxes"}, {"name": "num_detections"}]}
    answer = httpx.post(f"{server.url}/v2/models/squares/infer", json=body, headers=AUTH).json()
    assert answer["id"] == "r1" and [o["name"] for o in answer["outputs"]] == ["detection_boxes", "num_detections"]
    boxes = np.asarray(answer["outputs"][0]["data"], np.float32).reshape(answer["outputs"][0]["shape"])
    np.testing.assert_array_equal(boxes, direct["detection_boxes"])


def test_concurrent_clients_are_batched_and_each_gets_its_own_answer(server, site):
    import tritonclient.http as triton

    _, model, _ = site
    failures: list[str] = []

    def client_run(index: int) -> None:
        client = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
        for request in range(12):
            tiles = _tiles(1000 * index + request, count=1)
            served, direct = _binary_infer(client, tiles), _direct_cached(model, tiles)
            for name in OUTPUT_NAMES:
                if not np.array_equal(served[name], direct[name]):
                    failures.append(f"client {index} request {request}: {name} differs")

    threads = [threading.Thread(target=client_run, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    metrics = httpx.get(f"{server.url}/metrics", headers=AUTH).text
    single = float(_metric(metrics, 'minescan_batch_tiles_bucket{le="1.0"}'))
    calls = float(_metric(metrics, "minescan_batch_tiles_count"))
    assert calls < 72 + 10 and single < calls  # some model calls carried tiles of several requests
    assert float(_metric(metrics, 'minescan_tiles_total{kind="infer"}')) >= 72


_DETECTOR: dict = {}


def _direct_cached(model: Path, tiles: np.ndarray) -> dict[str, np.ndarray]:
    if model not in _DETECTOR:
        _DETECTOR[model] = OnnxRuntimeDetector(model, threads=1, workers=1)
    return _DETECTOR[model].run_contract(tiles)


def _metric(text: str, name: str) -> str:
    line = next(line for line in text.splitlines() if line.startswith(name + " "))
    return line.split()[-1]


def _wait(server: Server, job_id: str, states=("done", "failed", "cancelled"), timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = httpx.get(f"{server.url}/v1/scans/{job_id}", headers=AUTH).json()
        if job["state"] in states:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still {job['state']}")


def test_a_scene_job_finds_every_object_once(server, site):
    _, _, truth = site
    answer = httpx.post(f"{server.url}/v1/scans", json={"scene": "scene.tif", "model": "squares",
                                                        "options": {"tile": 256, "overlap": 64}}, headers=AUTH)
    assert answer.status_code == 202 and answer.json()["status_url"] == f"/v1/scans/{answer.json()['id']}"
    job = _wait(server, answer.json()["id"])
    assert job["state"] == "done" and job["tiles"]["done"] == job["tiles"]["total"] > 1
    collection = httpx.get(f"{server.url}/v1/scans/{job['id']}/detections?format=geojson", headers=AUTH).json()
    found = sorted((f["properties"]["col_min"], f["properties"]["row_min"], f["properties"]["col_max"], f["properties"]["row_max"])
                   for f in collection["features"])
    assert found == sorted(tuple(float(v) for v in box) for box in truth.boxes)  # every object, once
    assert collection["minescan"]["reliable"] is True
    gpkg = httpx.get(f"{server.url}/v1/scans/{job['id']}/detections?format=gpkg", headers=AUTH)
    assert gpkg.status_code == 200 and gpkg.content[:16] == b"SQLite format 3\x00"


def test_an_inline_stac_item_whose_assets_lie_under_the_data_root_is_scanned(server, site, tmp_path):
    from testkit.products import write_band_files, write_stac_item

    folder, _, _ = site
    files, truth = write_band_files(folder / "data" / "bands", SceneSpec(width=900, height=700, objects=8, seed=2))
    item = json.loads(write_stac_item(folder / "data" / "item.json", files, item_id="S2-test").read_text())
    for asset in item["assets"].values():  # hrefs relative to the data root, as a client sends them
        asset["href"] = "bands/" + Path(asset["href"]).name
    answer = httpx.post(f"{server.url}/v1/scans", json={"stac_item": item, "options": {"tile": 256}}, headers=AUTH)
    assert answer.status_code == 202, answer.text
    job = _wait(server, answer.json()["id"])
    assert job["state"] == "done" and job["scene"] == "stac_item S2-test" and job["detections"] == len(truth.boxes)
    item["assets"]["red"]["href"] = "../token"
    refused = httpx.post(f"{server.url}/v1/scans", json={"stac_item": item}, headers=AUTH)
    assert refused.status_code == 403 and "'..' is refused" in refused.json()["error"]


def _malformed(server: Server, site) -> list[tuple[str, httpx.Response]]:
    folder, _, _ = site
    (folder / "data" / "escape").unlink(missing_ok=True)
    (folder / "data" / "escape").symlink_to("/etc")
    infer = f"{server.url}/v2/models/squares/infer"
    good = {"name": "input_tensor", "datatype": "UINT8", "shape": [1, 2, 2, 3], "data": list(range(12))}
    binary_head = json.dumps({"inputs": [{**good, "data": None, "parameters": {"binary_data_size": 12}}]}).replace('"data": null, ', "")
    h = {**AUTH, "Inference-Header-Content-Length": str(len(binary_head))}
    post = lambda url, **kw: httpx.post(url, headers={**AUTH, **kw.pop("headers", {})}, **kw)  # noqa: E731
    cases = [
        ("not JSON", lambda: post(infer, content=b"{nope")),
        ("a JSON list", lambda: post(infer, json=[1, 2])),
        ("no inputs", lambda: post(infer, json={"inputs": []})),
        ("wrong input name", lambda: post(infer, json={"inputs": [{**good, "name": "image"}]})),
        ("wrong datatype", lambda: post(infer, json={"inputs": [{**good, "datatype": "FP32"}]})),
        ("shape of rank 3", lambda: post(infer, json={"inputs": [{**good, "shape": [2, 2, 3]}]})),
        ("negative shape", lambda: post(infer, json={"inputs": [{**good, "shape": [1, -2, 2, 3]}]})),
        ("a 100 GB shape", lambda: post(infer, json={"inputs": [{**good, "shape": [1, 100000, 333333, 3]}]})),
        ("too few values", lambda: post(infer, json={"inputs": [{**good, "data": [1, 2, 3]}]})),
        ("values out of range", lambda: post(infer, json={"inputs": [{**good, "data": [300] * 12}]})),
        ("binary size mismatch", lambda: post(infer, content=binary_head.encode() + bytes(5), headers=h)),
        ("truncated binary body", lambda: post(infer, content=binary_head.encode() + bytes(11), headers=h)),
        ("header length not a number", lambda: post(infer, content=b"{}", headers={"Inference-Header-Content-Length": "x"})),
        ("header length past the body", lambda: post(infer, content=b"{}", headers={"Inference-Header-Content-Length": "99"})),
        ("unknown output", lambda: post(infer, json={"inputs": [good], "outputs": [{"name": "logits"}]})),
        ("unknown model", lambda: post(f"{server.url}/v2/models/nope/infer", json={"inputs": [good]})),
        ("body over the limit", lambda: post(infer, content=bytes(3 * 2**20))),
        ("scene with ..", lambda: post(f"{server.url}/v1/scans", json={"scene": "../token"})),
        ("absolute scene", lambda: post(f"{server.url}/v1/scans", json={"scene": "/etc/passwd"})),
        ("symlink out of the root", lambda: post(f"{server.url}/v1/scans", json={"scene": "escape/passwd"})),
        ("unknown option", lambda: post(f"{server.url}/v1/scans", json={"scene": "scene.tif", "options": {"tiles": 3}})),
        ("option out of range", lambda: post(f"{server.url}/v1/scans", json={"scene": "scene.tif", "options": {"score_threshold": 7}})),
        ("missing scene", lambda: post(f"{server.url}/v1/scans", json={"scene": "nothing.tif"})),
        ("concessions outside the root", lambda: post(f"{server.url}/v1/scans", json={"scene": "scene.tif",
                                                                                     "options": {"concessions": "/etc/passwd"}})),
        ("mask through ..", lambda: post(f"{server.url}/v1/scans", json={"scene": "scene.tif", "options": {"mask": "../token"}})),
        ("mask classes out of range", lambda: post(f"{server.url}/v1/scans", json={"scene": "scene.tif",
                                                                                  "options": {"mask_classes": [3, 12]}})),
        ("unknown job", lambda: httpx.get(f"{server.url}/v1/scans/0123", headers=AUTH)),
        ("no token", lambda: httpx.post(infer, json={"inputs": [good]})),
        ("wrong token", lambda: httpx.get(f"{server.url}/v2/models/squares", headers={"Authorization": "Bearer wrong"})),
    ]
    return [(name, call()) for name, call in cases]


def test_malformed_requests_are_4xx_json_errors_and_the_server_stays_ready(server, site):
    answered = []
    for _ in range(8):  # 29 kinds x 8 = 232 requests
        answered += _malformed(server, site)
    for name, response in answered:
        assert 400 <= response.status_code < 500, (name, response.status_code, response.text)
        error = response.json()["error"]
        assert isinstance(error, str) and "\n" not in error and "Traceback" not in error, name
    codes = {name: r.status_code for name, r in answered}
    assert codes["a 100 GB shape"] == 413 and codes["body over the limit"] == 413 and codes["unknown model"] == 404
    assert codes["symlink out of the root"] == 403 and codes["no token"] == 401 and codes["wrong token"] == 401
    assert codes["concessions outside the root"] == 403 and codes["mask through .."] == 403
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200  # no token needed, still ready
    metrics = httpx.get(f"{server.url}/metrics", headers=AUTH).text
    assert float(_metric(metrics, 'minescan_request_errors_total{endpoint="infer"}')) >= 8 * 15
    # one JSON log line per request, with what an operator greps for
    folder, _, _ = site
    logged = [json.loads(line) for path in folder.glob("server-*.log") for line in path.read_text().splitlines()
              if line.startswith('{"ts"')]
    refused = [entry for entry in logged if entry["endpoint"] == "infer" and entry["status"] == 413]
    assert len(refused) >= 16 and {"ts", "method", "path", "status", "ms", "client"} <= set(refused[0])


def test_jobs_survive_kill_9_and_a_graceful_stop_requeues_the_running_one(site, tmp_path):
    folder, model, truth = site
    # A scene big enough that a job runs for a while at 64 px tiles.
    write_scene(folder / "data" / "big.tif", SceneSpec(width=3000, height=3000, objects=40, seed=5))
    first = Server(folder, model, "--state", str(tmp_path / "state")).start()
    submit = {"scene": "big.tif", "options": {"tile": 64, "overlap": 16, "batch": 1}}
    ids = [httpx.post(f"{first.url}/v1/scans", json=submit, headers=AUTH).json()["id"] for _ in range(4)]
    _wait(first, ids[0], states=("running",))
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL
    second = Server(folder, model, "--state", str(tmp_path / "state")).start()
    jobs = [_wait(second, i, timeout=600) for i in ids]
    assert [j["state"] for j in jobs] == ["done"] * 4
    assert [j["attempts"] for j in jobs] == [2, 1, 1, 1]  # the interrupted one ran again, once
    assert len({j["detections"] for j in jobs}) == 1  # the same scene and options: the same answer, restart or not
    # graceful stop (SIGTERM): the running job goes back to the queue without counting the attempt
    again = httpx.post(f"{second.url}/v1/scans", json=submit, headers=AUTH).json()["id"]
    _wait(second, again, states=("running",))
    # uvicorn shuts down gracefully, then re-raises the signal: the exit status says SIGTERM
    assert second.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
    third = Server(folder, model, "--state", str(tmp_path / "state"), "--max-queued-jobs", "2").start()
    job = _wait(third, again, timeout=600)
    assert job["state"] == "done" and job["attempts"] == 1
    # a full queue answers 429 with Retry-After; DELETE cancels queued and running jobs
    running = httpx.post(f"{third.url}/v1/scans", json=submit, headers=AUTH).json()["id"]
    _wait(third, running, states=("running",))
    queued = [httpx.post(f"{third.url}/v1/scans", json=submit, headers=AUTH) for _ in range(3)]
    assert [q.status_code for q in queued] == [202, 202, 429] and queued[2].headers["retry-after"]
    for job_id in [running] + [q.json()["id"] for q in queued[:2]]:
        assert httpx.delete(f"{third.url}/v1/scans/{job_id}", headers=AUTH).status_code == 200
        assert _wait(third, job_id)["state"] == "cancelled"
    third.stop()
