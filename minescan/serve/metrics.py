"""Prometheus metrics of the service (``GET /metrics``, text exposition format).

Names follow Prometheus conventions (``_total`` counters, ``_seconds``
histograms, base units); rates such as tiles per second are ``rate()`` of the
counters on the Prometheus side.  One registry per server, so tests and
embedded servers do not share counts.
"""

from __future__ import annotations

from typing import Callable


class Metrics:
    """The service's metrics; ``jobs`` and ``queue_depth`` are read when scraped."""

    def __init__(self, jobs: Callable[[], dict[str, int]], queue_depth: Callable[[], int]) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("minescan_requests_total", "HTTP requests by endpoint and status code",
                                ["endpoint", "status"], registry=self.registry)
        self.errors = Counter("minescan_request_errors_total", "HTTP requests answered 4xx or 5xx, by endpoint",
                              ["endpoint"], registry=self.registry)
        self.latency = Histogram("minescan_request_duration_seconds", "HTTP request latency by endpoint", ["endpoint"],
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
                                 registry=self.registry)
        self.batch = Histogram("minescan_batch_tiles", "Tiles per model call of the dynamic batcher",
                               buckets=(1, 2, 4, 8, 16, 32, 64), registry=self.registry)
        self.tiles = Counter("minescan_tiles_total", "Tiles run through a model, by kind (infer or scan)", ["kind"],
                             registry=self.registry)
        queue = Gauge("minescan_infer_queue_depth", "Infer requests waiting for the model", registry=self.registry)
        queue.set_function(queue_depth)
        self._jobs = Gauge("minescan_jobs", "Scene jobs by state", ["state"], registry=self.registry)
        self._jobs_of = jobs

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)
        if status >= 400:
            self.errors.labels(endpoint).inc()

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        for state, count in self._jobs_of().items():
            self._jobs.labels(state).set(count)
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
