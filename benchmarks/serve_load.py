"""Load on ``minescan serve``: concurrent binary infer clients against the model-only floor, in one run.

Run from the repository root (after the README's setup; the ``serve`` extra and tritonclient):

    .venv/bin/python benchmarks/serve_load.py                         # 8 clients x 250 requests, 512 px tiles
    .venv/bin/python benchmarks/serve_load.py --clients 2 --requests 20   # a smoke run

It starts the real server (``python -m minescan serve``) on a free loopback
port with the known-answer square detector (``testkit``), twice: with dynamic
batching (``--max-batch 8``) and without (``--max-batch 1``).  Each client is a
thread with its own ``tritonclient.http`` client sending one 1-tile binary
request at a time (its own tiles; every answer is checked against a direct call
of the same model).  Reported: requests/s, latency p50/p95/p99, errors, and
the server's tiles/s against the *model-only floor*: the same tiles through the
same model in this process, batch ``--max-batch``, with the service's own
concurrency (one 1-thread call per core), measured in the same run just before.
Clients and server share the machine's cores, as they would on one host.
Results go to benchmarks/serve_load.md.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minescan.defaults import available_cores  # noqa: E402
from minescan.engine.onnxruntime_backend import OnnxRuntimeDetector  # noqa: E402
from minescan.model.contract import OUTPUT_NAMES  # noqa: E402
from testkit.square_detector import save_square_detector  # noqa: E402

from machine import cpu_description  # noqa: E402  benchmarks/machine.py, beside this script

HERE = Path(__file__).resolve().parent


def _tiles(seed: int, count: int, size: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    tiles = rng.integers(0, 60, (count, size, size, 3), dtype=np.uint8)
    for tile in tiles:
        for _ in range(6):
            y, x = rng.integers(0, size - 40, 2)
            h, w = rng.integers(8, 40, 2)
            tile[y : y + h, x : x + w] = (250, 200, 40)
    return tiles


def floor(model: Path, tiles: np.ndarray, batch: int, seconds: float = 5.0) -> float:
    """Tiles/s of the model alone: batches of ``batch`` with the service's concurrency, for about ``seconds``."""
    detector = OnnxRuntimeDetector(model)
    chunks = [tiles[i : i + batch] for i in range(0, len(tiles) - batch + 1, batch)]
    detector.run_contract(chunks[0])  # warm-up
    done, started = 0, time.perf_counter()
    with ThreadPoolExecutor(detector.concurrency) as pool:
        while time.perf_counter() - started < seconds:
            done += sum(len(c) for c in pool.map(lambda c: (detector.run_contract(c), c)[1], chunks))
    return done / (time.perf_counter() - started)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_load(model: Path, clients: int, requests: int, size: int, max_batch: int, folder: Path) -> dict:
    import tritonclient.http as triton

    port = _port()
    server = subprocess.Popen([sys.executable, "-m", "minescan", "serve", "--model", f"squares={model}", "--port", str(port),
                               "--state", str(folder / f"state-{max_batch}"), "--max-batch", str(max_batch)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        detector = OnnxRuntimeDetector(model, threads=1, workers=1)
        per_client = [_tiles(1000 + c, 8, size) for c in range(clients)]
        expected = [[detector.run_contract(t[i : i + 1]) for i in range(len(t))] for t in per_client]
        latencies: list[float] = []
        errors: list[str] = []
        lock = threading.Lock()

        def work(index: int) -> None:
            client = triton.InferenceServerClient(f"127.0.0.1:{port}", connection_timeout=60, network_timeout=60)
            outputs = [triton.InferRequestedOutput(n, binary_data=True) for n in OUTPUT_NAMES]
            mine = []
            for r in range(requests):
                tile = per_client[index][r % 8 : r % 8 + 1]
                given = triton.InferInput("input_tensor", list(tile.shape), "UINT8")
                given.set_data_from_numpy(tile, binary_data=True)
                start = time.perf_counter()
                try:
                    result = client.infer("squares", [given], outputs=outputs)
                    mine.append(time.perf_counter() - start)
                    want = expected[index][r % 8]
                    if not all(np.array_equal(result.as_numpy(n), want[n]) for n in OUTPUT_NAMES):
                        with lock:
                            errors.append("wrong answer")
                except Exception as exc:  # every failure counts as an error of the run
                    with lock:
                        errors.append(type(exc).__name__)
            with lock:
                latencies.extend(mine)

        threads = [threading.Thread(target=work, args=(c,)) for c in range(clients)]
        cpu_before = _cpu_seconds(server.pid)
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds = time.perf_counter() - started
        server_cpu = _cpu_seconds(server.pid) - cpu_before
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        calls = next(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("minescan_batch_tiles_count"))
    finally:
        server.terminate()
        server.wait(timeout=30)
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [latencies[0]] * 99
    total = clients * requests
    return {"max_batch": max_batch, "requests": total, "seconds": seconds, "rps": total / seconds, "p50": q[49] * 1000,
            "p95": q[94] * 1000, "p99": q[98] * 1000, "errors": len(errors), "tiles_per_call": total / calls,
            "server_cpu_ms": server_cpu / total * 1000}


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    import os

    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--requests", type=int, default=250, help="requests per client (default 250)")
    p.add_argument("--size", type=int, default=512, help="tile side in px (default 512)")
    p.add_argument("--out", type=Path, default=HERE / "serve_load.md")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="minescan-load-") as work:
        folder = Path(work)
        model = save_square_detector(folder / "squares.onnx")
        tiles = _tiles(7, 64, args.size)
        rows = []
        for max_batch in (8, 1):
            model_floor = floor(model, tiles, max_batch)
            result = run_load(model, args.clients, args.requests, args.size, max_batch, folder)
            result["floor"] = model_floor
            rows.append(result)
            print(result, flush=True)
    lines = [
        f"Measured {date.today()} on {cpu_description()}: {args.clients} clients x {args.requests} binary infer requests "
        f"of one {args.size} px tile (tritonclient.http, loopback), known-answer detector; floor: the model alone in "
        "the same run, batch = --max-batch, the service's concurrency.",
        "",
        "| --max-batch | requests/s | p50 ms | p95 ms | p99 ms | errors | tiles per model call | server CPU ms per request | model-only floor tiles/s | model CPU ms per tile | server / floor |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['max_batch']} | {r['rps']:.1f} | {r['p50']:.1f} | {r['p95']:.1f} | {r['p99']:.1f} | {r['errors']} | "
                     f"{r['tiles_per_call']:.2f} | {r['server_cpu_ms']:.1f} | {r['floor']:.1f} | {1000 * available_cores() / r['floor']:.1f} | "
                     f"{r['rps'] / r['floor']:.2f}x |")
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
