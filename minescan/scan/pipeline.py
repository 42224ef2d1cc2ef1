"""Stages that overlap: each runs in its own thread behind a bounded queue.

:func:`threaded` turns an iterator into one that is computed ahead in a
background thread, at most ``maxsize`` items ahead.  Chaining it (read ->
render and batch -> infer) overlaps the stages, so the slowest one sets the
pace and the others hide behind it, while the bounded queues cap memory: a
fast reader blocks instead of filling RAM with tiles.  An exception in any
stage surfaces in the consumer; a consumer that stops early (an error, Ctrl-C)
stops every stage upstream.  The heavy work inside stages (GDAL decoding,
ONNX Runtime, NumPy) releases the GIL, which is what makes threads pay off.

:func:`ordered_map` runs one stage on several threads at once (inference on
the CPU, where one call per core beats one call over all cores) and still
hands its results on in input order, which the row-by-row stitcher needs.

:class:`StageClock` records how long each stage is busy per item, which is
what ``minescan bench`` reports.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import defaultdict, deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")
_END = object()
_POLL = 0.1  # seconds between checks of the stop flag while blocked on a queue


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def threaded(source: Iterable[T], *, maxsize: int, name: str) -> Iterator[T]:
    """Iterate ``source`` in a background thread, buffering at most ``maxsize`` items."""
    items: queue.Queue = queue.Queue(maxsize=max(1, maxsize))
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        iterator = iter(source)
        try:
            for item in iterator:
                if not put(item):
                    return
            put(_END)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            put(_Failure(exc))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()  # stops the stage upstream when it is threaded too

    worker = threading.Thread(target=produce, name=f"minescan-{name}", daemon=True)
    worker.start()

    def consume() -> Iterator[T]:
        try:
            while True:
                item = items.get()
                if item is _END:
                    return
                if isinstance(item, _Failure):
                    raise item.exc
                yield item  # type: ignore[misc]
        finally:
            stop.set()
            worker.join()

    return consume()


def ordered_map(function: Callable[[T], R], items: Iterable[T], *, workers: int, name: str) -> Iterator[R]:
    """``map(function, items)`` on ``workers`` threads, results in input order, ``workers + 1`` items in flight at most."""
    if workers <= 1:
        yield from map(function, items)
        return
    pending: deque[Future[R]] = deque()
    with ThreadPoolExecutor(workers, thread_name_prefix=f"minescan-{name}") as pool:
        try:
            for item in items:
                pending.append(pool.submit(function, item))
                if len(pending) > workers:  # one queued behind the running ones, so no worker waits
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:  # the consumer stopped early: drop what has not started
                future.cancel()
            close = getattr(items, "close", None)
            if close is not None:
                close()  # stops the stage upstream when it is threaded too


class StageClock:
    """Busy time per stage: one (seconds, tiles) record per item a stage handled.

    ``tiles`` may be a fraction: a decoded piece rendered in the reader counts as
    the tiles' worth of pixels it holds.
    """

    def __init__(self) -> None:
        self.records: dict[str, list[tuple[float, float]]] = defaultdict(list)

    @contextmanager
    def time(self, stage: str, tiles: float = 1):
        start = time.perf_counter()
        try:
            yield
        finally:
            # list.append is atomic under the GIL; each stage appends from its own thread.
            self.records[stage].append((time.perf_counter() - start, tiles))

    def total(self, stage: str) -> float:
        return sum(seconds for seconds, _ in self.records.get(stage, []))

    def per_tile(self, stage: str) -> list[float]:
        """Seconds per tile of each item (an item of a batch stage counts once per tile)."""
        return [seconds / tiles for seconds, tiles in self.records.get(stage, []) if tiles > 0]
