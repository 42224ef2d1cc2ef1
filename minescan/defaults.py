"""Every default of a scan, in one table.

A scan setting comes from, in this order: what the caller asked for (a
command-line option or an API argument), the model's metadata (the recipe its
owner exported it with), the scene's product (a ``.SAFE``'s offset, a STAC
item's nodata), the raster itself (its nodata, colour interpretation, data
type), and last this table.  :mod:`minescan.scan.plan` applies that order and
records where each value came from; the command line's help texts, the
exporter's recipe and the API read their defaults from here, so a default is
changed in exactly one place.  Importing this module costs nothing (no numpy,
no GDAL): the command line reads it before it knows which command runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


CORES_VARIABLE = "MINESCAN_CORES"


def available_cores() -> int:
    """The cores this process may use: ``MINESCAN_CORES`` when set (a Ray actor's share of its node, a
    container's quota), else the CPU affinity mask."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    limit = os.environ.get(CORES_VARIABLE, "").strip()
    if limit.isdigit() and int(limit) >= 1:
        return min(cores, int(limit))
    return cores


@dataclass(frozen=True)
class Defaults:
    """The built-in value of each scan setting (see the module docstring for the order above it)."""

    tile: int = 640  # px, for models that take any input size
    overlap: int = 128  # px; objects up to this size are stitched exactly
    batch: int = 4  # tiles per inference call
    score_threshold: float = 0.5
    # Radiometry: reflectance = (value + offset) / scale, rendered clip(reflectance * gain, 0, 1) * 255.
    gain: float = 2.5  # Sentinel-2 true colour
    offset: float = 0.0  # DN; -1000 for L2A from processing baseline 04.00 (products declare it)
    scale: float = 10000.0  # Sentinel-2 DN per unit reflectance; float scenes holding reflectance use 1
    # Float scenes whose valid values' 99th percentile is at most this hold reflectance (scale 1), else DN.
    reflectance_ceiling: float = 2.0
    # Stitching (minescan.scan.stitch).
    iou: float = 0.4
    containment: float = 0.8
    # px: how far a model may place a box edge from where another tile (or the tile edge) puts it.  A box edge
    # this close to an interior tile edge is cut there; two boxes, one of them cut, are one object when each
    # edge agrees within it (minescan.scan.stitch).  Issue 12 saw boxes move by up to 3 px per tile; random
    # layouts (tests/test_stitch_property.py) stitch exactly up to 6 px of noise; at 7 px, 23 of their 1232
    # large objects go wrong.
    edge_tolerance: float = 6.0
    drop_parts: float = 0.0  # off
    # Domain-shift guard (minescan.model.statistics): a scene whose rendered input lies further than this
    # from the model's training input (in training standard deviations) is flagged as unreliable.
    shift_threshold: float = 0.5
    # Classifier gate (minescan.scan.gate): a detector tile whose best classifier window scores below this
    # skips the detector.  Low on purpose: a tile gated off loses every object in it, while a tile let through
    # only costs time.  Measured with minescan calibrate-gate, demo detector gated by the demo classifier, two
    # sparse 4096 px demo scenes (seeds 3, 4; 0.3 illegal + 0.1 legal sites per 100 km2; 14 sites, 128 tiles):
    # recall 1.000 at every threshold from 0 to 0.9; at 0.2, 50% of tiles skipped (0.05: 17%, 0.9: 80%).
    # Few sites, one model pair: calibrate your own pair on your own labelled scenes.
    gate_threshold: float = 0.2
    # The gate's windows inside a detector tile step by this share of the classifier's window: 1.0 lays them
    # side by side (100 windows of 64 px per 640 px tile), 0.5 overlaps them by half (361), four times the
    # classifier's work.  Measured with minescan calibrate-gate on the two sparse scenes above (demo pair):
    # recall 1.000 at every threshold with either; at threshold 0.2, 64% of tiles skipped side by side and 50%
    # at half-window steps (a tile's best window scores lower when fewer windows are laid over it).
    gate_stride_share: float = 1.0
    # Windows per classifier call when the gate scores a batch (a 640 px tile holds 19 x 19 = 361 windows of
    # 64 px every 32 px): bounds the classifier's input and activations per call; not tuned.
    gate_windows_per_call: int = 256
    # Concurrency: ONNX Runtime calls side by side on the CPU, and reader threads.
    max_workers: int = 4
    max_read_threads: int = 8
    # Model-aware split (minescan.engine.memory_budget): a model whose probe call takes at least this many
    # seconds per 640 px tile is "costly" and gets costly_split instead of cpu_split.  The two models measured
    # sit far on either side: the demo detector 0.03-0.13 s on its first call (two 1-thread calls 1.33x faster than one
    # 2-thread call), the ResNet-50 fixture Faster R-CNN 1.4 s on its first call (one 2-thread call as fast as
    # two 1-thread calls at 0.72x the peak RSS; benchmarks/memory_defaults.md).  Models between are not measured.
    costly_call_s: float = 0.5
    # Memory budget (minescan scan --max-memory): by default this share of the machine's RAM.  Half leaves
    # the rest to the OS page cache the reader decodes from and to other processes; the default never refuses
    # a model (one call always runs), it only caps how many calls are in flight.
    memory_share: float = 0.5
    # bytes the budget keeps for the reader and the queues besides the model's calls: two 1024-row strips and
    # GDAL's cache for them measured ~100 MB on a 10980 px scene, the queues hold (3 x batch + batch) tiles of
    # 1.2 MB at 640 px; the rest is headroom for the stitcher and the result.
    scan_reserve: int = 256 * 2**20
    backend: str = "auto"
    # Scoring against truth (minescan evaluate, the demo): PASCAL/COCO's match IoU.
    match_iou: float = 0.5
    # Tile-classifier truth (minescan.results.window_truth): a window shows mining when it holds at least this
    # share of a site, or a site covers at least this share of it; a window a site only grazes is ambiguous.
    window_object_share: float = 0.5
    window_cover: float = 0.25
    # Quality masks (minescan.quality): a tile whose part inside the scene is at least this share masked
    # (clouds, shadows, cirrus, snow...) is not scanned: a detector sees too little ground there to be worth a call,
    # and what it would find there could not be trusted.  The tile's clear remnant (< 10 %) is not searched either;
    # the quicklook shades it and results carry it as "not scanned" (unobserved), never as "nothing found".
    skip_masked: float = 0.9
    # A detection whose box is more than this share masked is flagged (or, with masked="drop", dropped): half
    # its area under cloud means its box and class rest on what the model half saw.
    max_masked: float = 0.5
    masked: str = "flag"  # flag keeps every detection and marks it; drop removes it
    # The run report (minescan.report): image chips of at most this many listed sites (alerts first), each a PNG of
    # about 100 kB and a windowed read of one or two scenes.
    report_chips: int = 50
    # Multi-scene runs.
    result_format: str = "gpkg"
    quicklook_size: int = 1024  # px; a 10980 px Sentinel-2 tile becomes a PNG of 1-3 MB
    # Scenes from a STAC API search (minescan.raster.sources.stac_search): the collection searched, at most
    # this many items per search (a cap, so a too wide search cannot queue thousands of scenes), and the
    # seconds each request to the API may take.
    stac_collection: str = "sentinel-2-l2a"
    stac_max_items: int = 500
    stac_timeout: float = 60.0
    # Runs on a Ray cluster (minescan.scaleout.ray_run).  A scene of more tiles than this is split into bands
    # of tile rows scanned by different workers: two full Sentinel-2 tiles' worth at 640/128 px (484 tiles
    # each), so an ordinary scene goes whole to one worker and only mosaics and larger rasters are cut.
    ray_split_tiles: int = 1024
    ray_max_retries: int = 2  # a scene (or part) whose worker died is retried this many times on another
    ray_poll_s: float = 1.0  # how often the driver asks the busy workers for their tiles done
    # How long a run waits for its first worker to load its model when none is in service (Ray may still be
    # placing it, installing a runtime_env, or unable to: resources the cluster lacks); then it stops.
    ray_start_timeout_s: float = 600.0
    # The service (minescan serve): loopback unless told otherwise; limits that keep one request from
    # costing more than a few hundred MB.
    serve_host: str = "127.0.0.1"
    serve_port: int = 8000
    serve_max_batch: int = 8  # tiles per model call of the dynamic batcher
    serve_batch_delay_ms: float = 2.0  # how long a batch waits for more requests
    serve_max_body: int = 64 * 2**20  # bytes per request body (a batch of 32 640 px tiles is 39 MB)
    serve_max_tiles: int = 64  # tiles per infer request
    serve_max_side: int = 4096  # px, a tile's side in an infer request
    serve_max_jobs_queued: int = 32  # scene jobs waiting; one more is answered 429
    serve_max_infer_pending: int = 256  # infer requests waiting for the model; one more is answered 503
    # ONNX Runtime's TensorRT provider (scan --backend tensorrt on an .onnx model) caches its engines and its
    # timing cache here, one engine folder per model content (minescan.engine.onnxruntime_backend.tensorrt_options),
    # so only its first start builds.  "": $XDG_CACHE_HOME/minescan/ort-trt, else ~/.cache/minescan/ort-trt.
    ort_trt_cache: str = ""

    def read_threads(self, cores: int | None = None) -> int:
        """Reader threads: two per core, at most :attr:`max_read_threads`.

        More threads than cores keep a core decoding while another thread waits on
        the file or on its turn: measured on 2 cores, full 10980 px scene, a model
        that costs nothing, runs alternating: 2 threads 2.22-2.45 s, 4 threads
        1.97-2.22 s; with the demo Faster R-CNN the same within noise (6.1-6.6 s).
        Above 2 cores the formula is not measured here.
        """
        return min(self.max_read_threads, 2 * (cores or available_cores()))

    def cpu_split(self, threads: int | None = None, workers: int | None = None, cores: int | None = None) -> tuple[int, int]:
        """(intra-op threads per call, concurrent calls) on the CPU; what is not given fills the cores.

        Measured on 2 cores, batch 4 of 640 px tiles: the known-answer detector
        17.8 ms/tile with one 2-thread call, 12.6 ms/tile with two 1-thread calls;
        the demo Faster R-CNN 29.6 vs 22.3 ms/tile.
        """
        cores = cores or available_cores()
        if workers is None:
            workers = max(1, min(self.max_workers, cores // (threads or 1)))
        if threads is None:
            threads = max(1, cores // workers)
        return threads, workers

    def costly_split(self, cores: int | None = None) -> tuple[int, int]:
        """(intra-op threads per call, concurrent calls) for a costly model: one call on every core.

        Measured on 2 cores, the ResNet-50 fixture Faster R-CNN over 9 tiles
        (benchmarks/memory_defaults.md, 2026-12-03, load 2-3): one 2-thread call
        14.4 s, two 1-thread calls 14.6 s, and each call in flight holds its own
        activations (the probe: about 660 MiB per call), so the second call costs
        memory (peak RSS 1853 against 1335 MiB, ORT's session defaults) and buys
        nothing.  Above 2 cores not measured.
        """
        return max(1, cores or available_cores()), 1


DEFAULTS = Defaults()
