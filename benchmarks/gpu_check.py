"""The GPU check's driver: ``minescan bench`` per model x precision on one backend, every figure into one JSON.

Run by benchmarks/gpu_check.sh on the GPU machine (read its header first); on its own, anywhere:

    python benchmarks/gpu_check.py --out /tmp/gpu-check                                   # CUDA, demo + ResNet-50
    python benchmarks/gpu_check.py --out /tmp/g --backend cpu --models demo --batches 1 --scene-size 1024   # plumbing

Steps, each recorded in ``<out>/gpu_check.json`` (rewritten after every step, so a run cut short
still leaves what it measured):

1. ``machine``: date (UTC), host, CPU, GPU (``nvidia-smi -L``), Python, the ONNX Runtime that
   imports (version, file, providers, the distributions installed) and minescan's native modules;
2. ``scene``: a synthetic mining scene (:mod:`minescan.synthetic.mining`) of ``--scene-size`` px,
   unless ``--scene`` gives one;
3. ``models``: each ``--models`` entry in FP32 as given and in FP16 made by the project's own tool
   (:func:`minescan.export.variants.build_variant`, ``precision="fp16"``: what
   ``minescan export --precision fp16`` writes);
4. ``probes``: each backend of ``--probe-backends`` loading the demo detector in a subprocess of its
   own: the providers the session really runs on, its notice, or the error (the TensorRT provider
   needs TensorRT's libraries, which the GPU machine lacks: an error is the expected answer there);
5. ``gpu_render``: the CUDA render + cut kernels (:mod:`minescan.raster.gpu_render`) on one
   10980 px wide tile row of uint16 data: equal to the CPU kernels bit for bit, and timed against
   them (upload + render + cut into the device batch, against render + cut into a host batch);
6. ``runs``: ``minescan bench SCENE --model M --backend B --batch ... --json``, one subprocess per
   model and precision, with its ``backend:`` line, exit status, wall time, the bench's JSON and a
   summary per batch: the pipeline against the model-only floor (``alone_s.inference``); on CUDA
   the demo detector once more with ``--render gpu`` (render + cut on the GPU, the batch bound to
   ONNX Runtime in device memory).

Nothing here has run on a GPU yet; no figure of this script is quoted anywhere.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


class Report:
    """The JSON being built; :meth:`save` rewrites it whole (temporary file, then rename)."""

    def __init__(self, path: Path):
        self.path, self.data = path, {"started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds")}

    def save(self) -> None:
        self.data["saved_utc"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        partial = self.path.with_suffix(".json.part")
        partial.write_text(json.dumps(self.data, indent=2, default=str))
        partial.replace(self.path)


def machine() -> dict:
    """Where this ran: enough to name the machine and the software behind every figure."""
    import numpy as np
    import onnxruntime as ort

    from minescan.engine.backends import installed_onnxruntime, onnxruntime_conflict

    sys.path.insert(0, str(HERE))
    from machine import cpu_description  # benchmarks/machine.py

    smi = shutil.which("nvidia-smi")
    gpu = subprocess.run([smi, "-L"], capture_output=True, text=True).stdout.strip() if smi else "no nvidia-smi"
    native = {}
    for name in ("_native", "_native_cuda"):
        try:
            module = __import__(f"minescan.{name}", fromlist=["x"])
            native[name] = getattr(module, "__file__", "built-in")
        except ImportError as exc:
            native[name] = f"not importable: {exc}"
    import minescan

    return {
        "date_utc": datetime.now(timezone.utc).date().isoformat(), "host": platform.node(), "cpu": cpu_description(),
        "gpu": gpu, "python": sys.version.split()[0], "numpy": np.__version__,
        "onnxruntime": {"version": ort.__version__, "file": ort.__file__, "providers": ort.get_available_providers(),
                        "device": ort.get_device(), "installed": list(installed_onnxruntime()),
                        "conflict": onnxruntime_conflict(installed_onnxruntime()),
                        "preload_dlls": hasattr(ort, "preload_dlls")},
        "minescan": minescan.__file__, "native": native,
    }


def make_scene(size: int, work: Path) -> Path:
    from minescan.synthetic.mining import MiningSpec, write_mining_scene

    path = work / f"mining_7_{size}.tif"
    if not path.exists():
        write_mining_scene(path, MiningSpec(width=size, height=size, seed=7))
    return path


def fp16_variant(source: Path, work: Path) -> tuple[Path, str]:
    """The FP16 variant of ``source`` as ``minescan export --precision fp16`` builds it; (path, the tool's report)."""
    from minescan.export.variants import build_variant

    out = work / f"{source.stem}_fp16.onnx"
    variant = build_variant(source, out, precision="fp16")
    return out, variant.report.format()


_PROBE = """
import json, sys, time
from minescan.engine import load_detector
started = time.perf_counter()
try:
    d = load_detector(sys.argv[1], backend=sys.argv[2])
    print(json.dumps({"backend": d.backend, "providers": list(getattr(d, "providers", ())), "notice": d.notice,
                      "load_s": time.perf_counter() - started}))
except Exception as exc:
    print(json.dumps({"error": f"{type(exc).__name__}: {exc}", "load_s": time.perf_counter() - started}))
"""


def probe(model: Path, backend: str, timeout: float) -> dict:
    """Load ``model`` on ``backend`` in a fresh process: what the session runs on, or why not."""
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE, str(model), backend], capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    result = json.loads(lines[-1]) if lines else {"error": f"exit {done.returncode}"}
    result["stderr_tail"] = _tail(done.stderr, 8)
    return result


def summarize(bench: dict) -> list[dict]:
    """Per batch: the pipeline against the model-only floor, from ``minescan bench --json``."""
    rows = []
    for r in bench.get("results", []):
        model_s = r["alone_s"]["inference"]
        rows.append({
            "batch": r["batch"], "workers": r["workers"], "tiles": r["tiles"], "pipeline_s": r["pipeline_s"],
            "model_only_s": model_s, "tiles_per_s": r["tiles"] / r["pipeline_s"],
            "model_only_tiles_per_s": r["tiles"] / model_s if model_s else None,
            "pipeline_over_model_only": r["pipeline_s"] / model_s if model_s else None,
            "slowest_stage": r["slowest_stage"], "efficiency": r["efficiency"], "peak_rss_mb": r["peak_rss_mb"],
            "detections": r.get("detections"),
        })
    return rows


def bench(scene: Path, model: Path, backend: str, batches: str, out_json: Path, timeout: float,
          extra: tuple[str, ...] = ()) -> dict:
    """One ``minescan bench`` subprocess; its figures and what it said."""
    command = [sys.executable, "-m", "minescan", "bench", str(scene), "--model", str(model), "--backend", backend,
               "--batch", batches, "--json", str(out_json), *extra]
    started = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        rc, stdout, stderr = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired as exc:
        rc, stdout, stderr = "timeout", (exc.stdout or b"").decode(errors="replace"), (exc.stderr or b"").decode(errors="replace")
    result: dict = {"command": " ".join(command), "rc": rc, "wall_s": time.perf_counter() - started,
                    "backend_line": next((l for l in stdout.splitlines() if l.startswith("backend:")), None),
                    "stdout_tail": _tail(stdout, 25), "stderr_tail": _tail(stderr)}
    if rc == 0 and out_json.exists():
        result["bench"] = json.loads(out_json.read_text())
        result["summary"] = summarize(result["bench"])
    return result


def gpu_render(repeats: int = 5) -> dict:
    """The CUDA render + cut against the CPU kernels on one 10980 x 640 px tile row: equality and ms per row."""
    import numpy as np
    from rasterio.windows import Window

    from minescan.raster.gpu_render import GpuRender, cuda_devices
    from minescan.raster.grid import TileGrid
    from minescan.raster.radiometry import reflectance_gain
    from minescan.raster.strips import CutTile, _overlapping, _Piece
    from minescan.scan.stream import make_batches

    if cuda_devices() == 0:
        return {"skipped": "no CUDA device visible to minescan._native_cuda"}
    width, rows, size, overlap = 10980, 640, 640, 128
    data = np.random.default_rng(0).integers(0, 4000, (3, rows, width), dtype=np.uint16)
    nodata = np.zeros((rows, width), bool)
    nodata[:, :700] = True
    radiometry = reflectance_gain(3, offset=-1000)
    tiles = [t for t in TileGrid(width, rows, size, overlap) if t.row == 0]
    stage = GpuRender(radiometry, np.uint16, 3)

    def on_gpu():
        stage.render_rows(data, nodata, 0)
        batch = stage.cut(tiles)
        stage.synchronize()
        return batch

    def on_cpu():
        rgb, masked = radiometry.render(data, nodata)
        piece = _Piece(Window(0, 0, width, rows), rgb, nodata, masked)
        return [b.rgb.copy() for b in make_batches([CutTile(t, _overlapping(t, [piece])) for t in tiles], len(tiles))]

    got = stage.download(on_gpu())
    want = on_cpu()[0]
    # make_batches leaves out tiles that are all nodata; the device batch holds every tile
    kept = [i for i, t in enumerate(tiles) if not nodata[t.row_off:t.row_off + t.valid_height, t.col_off:t.col_off + t.valid_width].all()]
    equal = bool(np.array_equal(got[kept], want))

    def timed(fn) -> float:
        fn()
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return sorted(times)[len(times) // 2]

    gpu_s, cpu_s = timed(on_gpu), timed(on_cpu)
    return {"device": stage.device_name, "tiles": len(tiles), "equal_to_cpu_kernels": equal,
            "gpu_ms_per_row": gpu_s * 1000, "cpu_ms_per_row": cpu_s * 1000, "cpu_over_gpu": cpu_s / gpu_s}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu_check.json (created)")
    parser.add_argument("--backend", default="cuda", help="minescan bench --backend (default cuda)")
    parser.add_argument("--models", default="demo,r50", help="demo, r50, or NAME=PATH entries, comma-separated")
    parser.add_argument("--r50", type=Path, default=Path("/tmp/gpu-bundle/models/r50.onnx"), help="the ResNet-50 fixture")
    parser.add_argument("--precisions", default="fp32,fp16")
    parser.add_argument("--batches", default="1,4,8,16")
    parser.add_argument("--scene", type=Path, help="scene to bench on (default: a synthetic one of --scene-size px)")
    parser.add_argument("--scene-size", type=int, default=4096)
    parser.add_argument("--probe-backends", default="cuda,tensorrt", help="backends to load the demo detector on first")
    parser.add_argument("--budget-s", type=float, default=420.0, help="stop starting runs after this many seconds")
    parser.add_argument("--work", type=Path, help="scratch folder (default: <out>/../gpu-check-work)")
    args = parser.parse_args()

    started = time.perf_counter()
    left = lambda: args.budget_s - (time.perf_counter() - started)  # noqa: E731
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work or args.out.parent / "gpu-check-work"
    work.mkdir(parents=True, exist_ok=True)
    report = Report(args.out / "gpu_check.json")
    report.data.update(backend=args.backend, batches=args.batches, note="not yet run on a GPU unless machine.gpu names one")
    report.data["machine"] = machine()
    report.save()

    import minescan

    demo = Path(minescan.__file__).parent / "models" / "demo_detector.onnx"
    sources = {}
    for entry in args.models.split(","):
        name, _, path = entry.partition("=")
        sources[name] = Path(path) if path else {"demo": demo, "r50": args.r50}[name]

    t = time.perf_counter()
    scene = args.scene or make_scene(args.scene_size, work)
    report.data["scene"] = {"path": str(scene), "size_px": args.scene_size if not args.scene else None,
                            "made_s": time.perf_counter() - t}
    report.save()

    models: dict[str, dict] = {}
    report.data["models"] = models
    for name, source in sources.items():
        for precision in args.precisions.split(","):
            key = f"{name}-{precision}"
            if not source.is_file():
                models[key] = {"error": f"missing: {source}"}
                continue
            if precision == "fp32":
                models[key] = {"path": str(source), "bytes": source.stat().st_size}
                continue
            t = time.perf_counter()
            try:
                path, made = fp16_variant(source, work)
                models[key] = {"path": str(path), "bytes": path.stat().st_size, "made_by": made, "made_s": time.perf_counter() - t}
            except Exception as exc:  # recorded; the other models still run
                models[key] = {"error": f"{type(exc).__name__}: {exc}"}
            report.save()

    report.data["probes"] = {b: probe(demo, b, timeout=max(30.0, min(180.0, left()))) for b in args.probe_backends.split(",") if b}
    report.save()

    try:
        report.data["gpu_render"] = gpu_render()
    except Exception as exc:  # recorded; the benches still run
        report.data["gpu_render"] = {"error": f"{type(exc).__name__}: {exc}"}
    report.save()

    runs: dict[str, dict] = {}
    report.data["runs"] = runs
    for key, model in models.items():
        if "path" not in model:
            runs[key] = {"skipped": model.get("error")}
        elif left() < 30:
            runs[key] = {"skipped": f"out of time (--budget-s {args.budget_s:.0f})"}
        else:
            runs[key] = bench(scene, Path(model["path"]), args.backend, args.batches, work / f"bench-{key}.json", left())
        report.save()
    # The same demo bench with rendering and cutting on the GPU (scan --render gpu): the batch never leaves the device.
    demo32 = models.get("demo-fp32", {})
    if args.backend == "cuda" and "path" in demo32:
        key = "demo-fp32-render-gpu"
        runs[key] = (bench(scene, Path(demo32["path"]), args.backend, args.batches, work / f"bench-{key}.json", left(),
                           ("--render", "gpu")) if left() >= 30 else {"skipped": "out of time"})
        report.save()
    report.data["total_s"] = time.perf_counter() - started
    report.save()
    failed = [k for k, r in runs.items() if r.get("rc") != 0]
    print(f"gpu_check: wrote {report.path}; runs {len(runs) - len(failed)} ok, {len(failed)} not ({', '.join(failed) or 'none'})")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
