"""Stages that overlap: each runs in its own thread behind a bounded queue.

:func:`threaded` turns an iterator into one that is computed ahead in a
background thread, at most ``maxsize`` items ahead.  Chaining it (read ->
render and batch -> infer) overlaps the stages, so the slowest one sets the
pace and the others hide behind it, while the bounded queues cap memory: a
fast reader blocks instead of filling RAM with tiles.  An exception in any
stage surfaces in the consumer; a consumer that stops early (an error, Ctrl-C)
stops every stage upstream.  The heavy work inside stages (GDAL decoding,
ONNX Runtime, NumPy) releases the GIL, which is what makes threads pay off.

:class:`StageClock` records how long each stage is busy per item, which is
what ``minescan bench`` reports.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")
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


class StageClock:
    """Busy time per stage: one (seconds, tiles) record per item a stage handled."""

    def __init__(self) -> None:
        self.records: dict[str, list[tuple[float, int]]] = defaultdict(list)

    @contextmanager
    def time(self, stage: str, tiles: int = 1):
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
