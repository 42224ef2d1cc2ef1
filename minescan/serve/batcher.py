"""Dynamic batching: tiles of many requests run through the model together.

Each request's tiles wait in one bounded queue per model.  A worker takes the
oldest request, then keeps taking requests whose tiles have the same size
until the batch holds ``max_batch`` tiles or ``delay`` seconds have passed
since it started collecting, whichever comes first; runs the batch once; and
hands each request its own slice of every output.  The answer is the same as a
direct call on the request's tiles: the model runs each tile independently
(the detector splits batches larger than a fixed batch dimension itself).
Requests of another tile size wait for the next batch, in order.

``workers`` threads batch side by side (the detector's own concurrency: one
ONNX Runtime call per core on the CPU).  A full queue refuses new requests
(:class:`Busy`), so a flood of clients costs memory for at most
``max_pending`` requests.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from minescan.errors import MinescanError


class Busy(MinescanError):
    """The model's queue is full; try again shortly."""


@dataclass
class _Pending:
    tiles: np.ndarray
    future: Future = field(default_factory=Future)
    queued: float = field(default_factory=time.perf_counter)


class DynamicBatcher:
    """Batches requests for ``run`` (uint8 [B, H, W, 3] -> outputs with batch dimension B)."""

    def __init__(self, run: Callable[[np.ndarray], Mapping[str, np.ndarray]], *, max_batch: int, delay: float,
                 workers: int = 1, max_pending: int = 256, observe: Callable[[int], None] | None = None) -> None:
        self._run, self.max_batch, self.delay = run, max(1, max_batch), max(0.0, delay)
        self._queue: queue.Queue[_Pending | None] = queue.Queue(maxsize=max_pending)
        self._held: list[_Pending] = []  # other tile sizes, taken out while collecting; served first next time
        self._lock = threading.Lock()
        self._observe = observe
        self._threads = [threading.Thread(target=self._work, name=f"minescan-batcher-{i}", daemon=True) for i in range(max(1, workers))]
        for thread in self._threads:
            thread.start()

    @property
    def depth(self) -> int:
        """Requests waiting."""
        return self._queue.qsize() + len(self._held)

    def submit(self, tiles: np.ndarray) -> Future:
        """A future of ``tiles``' outputs; raises :class:`Busy` when the queue is full."""
        pending = _Pending(tiles)
        try:
            self._queue.put_nowait(pending)
        except queue.Full:
            raise Busy("too many infer requests waiting; retry shortly") from None
        return pending.future

    def close(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout=5)

    def _next(self, timeout: float | None) -> _Pending | None:
        with self._lock:
            if self._held:
                return self._held.pop(0)
        try:
            return self._queue.get(timeout=timeout) if timeout is None or timeout > 0 else self._queue.get_nowait()
        except queue.Empty:
            return None

    def _collect(self, first: _Pending) -> list[_Pending]:
        batch, count = [first], len(first.tiles)
        size = first.tiles.shape[1:]
        deadline = time.perf_counter() + self.delay
        others: list[_Pending] = []
        while count < self.max_batch:
            remaining = deadline - time.perf_counter()
            item = self._next(remaining if remaining > 0 else 0)
            if item is None:
                break
            if item.tiles.shape[1:] != size or count + len(item.tiles) > self.max_batch:
                others.append(item)
                if count + len(item.tiles) > self.max_batch and item.tiles.shape[1:] == size:
                    break
                continue
            batch.append(item)
            count += len(item.tiles)
        if others:
            with self._lock:
                self._held[:0] = others
        return batch

    def _work(self) -> None:
        while True:
            first = self._next(None)
            if first is None:
                return
            batch = self._collect(first) if self.max_batch > len(first.tiles) and self.delay > 0 else [first]
            tiles = batch[0].tiles if len(batch) == 1 else np.concatenate([p.tiles for p in batch])
            try:
                outputs = self._run(tiles)
            except BaseException as exc:  # every waiting request learns of it; the worker lives on
                for pending in batch:
                    pending.future.set_exception(exc)
                continue
            if self._observe:
                self._observe(len(tiles))
            start = 0
            for pending in batch:
                stop = start + len(pending.tiles)
                pending.future.set_result({name: value[start:stop] for name, value in outputs.items()})
                start = stop
