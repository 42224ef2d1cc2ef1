"""Progress of a run: bars on a terminal, log lines otherwise.

On a terminal (stderr is a tty) two tqdm bars: scenes overall (with tiles
scanned so far and an ETA from the scenes' pace) and tiles of the current
scene.  Otherwise, for logs of overnight jobs, plain lines on stdout: one when a
scene starts, one every ``interval`` seconds while it runs, one when it
ends.  Either way the per-scene result lines go to stdout and stderr stays
for errors.
"""

from __future__ import annotations

import sys
import time


class RunProgress:
    """Reports a run of ``scenes`` scenes; feed it with the calls below, then :meth:`close`."""

    def __init__(self, scenes: int, *, interval: float = 60.0) -> None:
        self._stream = sys.stderr
        self._tty = self._stream.isatty()
        self._interval = interval
        self._scene_bar = None
        self._tiles_total = 0
        self._scene: tuple[str, int, int, float, float] | None = None  # name, done, total, started, last report
        self._overall = None
        if self._tty:
            from tqdm import tqdm

            self._tqdm = tqdm
            self._overall = tqdm(total=scenes, unit="scene", desc="scenes", file=self._stream, position=0)

    def scene_started(self, name: str, tiles: int) -> None:
        """A scene of ``tiles`` tiles begins."""
        now = time.monotonic()
        self._scene = (name, 0, tiles, now, now)
        if self._tty:
            self._scene_bar = self._tqdm(total=tiles, unit="tile", desc=name[:40], file=self._stream, position=1, leave=False)
        else:
            print(f"{name}: scanning {tiles} tiles", flush=True)

    def tiles_done(self, count: int) -> None:
        """``count`` more tiles of the current scene are finished (the Scanner's ``progress``)."""
        assert self._scene is not None
        name, done, total, started, reported = self._scene
        done += count
        self._tiles_total += count
        now = time.monotonic()
        if self._scene_bar is not None:
            self._scene_bar.update(count)
        elif now - reported >= self._interval and done < total:
            left = (now - started) / done * (total - done)
            print(f"{name}: {done}/{total} tiles, about {left / 60:.0f} min left", flush=True)
            reported = now
        self._scene = (name, done, total, started, reported)

    def scene_finished(self, line: str) -> None:
        """The current scene (or an input that never started) ended; ``line`` says how, on stdout."""
        if self._scene_bar is not None:
            self._scene_bar.close()
            self._scene_bar = None
        self._scene = None
        if self._overall is not None:
            self._overall.update(1)
            self._overall.set_postfix(tiles=self._tiles_total)
            self._tqdm.write(line, file=sys.stdout)
        else:
            print(line, flush=True)

    def close(self) -> None:
        if self._scene_bar is not None:
            self._scene_bar.close()
        if self._overall is not None:
            self._overall.close()


class WorkerProgress:
    """Progress of a run whose scenes several workers scan at once (a Ray run).

    On a terminal: the scenes bar and one tiles bar per worker (its current
    scene or part).  Otherwise plain lines on stdout: one when a worker takes
    a job, one per busy worker every ``interval`` seconds, and the notes
    (workers started, retried jobs).  Scene result lines as in
    :class:`RunProgress`.
    """

    def __init__(self, workers: int, *, scenes: int | None = None, interval: float = 60.0) -> None:
        self._stream = sys.stderr
        self._tty = self._stream.isatty()
        self._interval = interval
        self._jobs: dict[int, list] = {}  # worker -> [label, done, total, last report, bar]
        self._overall = None
        if self._tty:
            from tqdm import tqdm

            self._tqdm = tqdm
            self._overall = tqdm(total=scenes, unit="scene", desc="scenes", file=self._stream, position=0)
        self._workers = workers

    def _say(self, text: str) -> None:
        if self._overall is not None:
            self._tqdm.write(text, file=sys.stdout)
        else:
            print(text, flush=True)

    def note(self, text: str) -> None:
        """A line about the run itself (a worker started, a job retried)."""
        self._say(text)

    def started(self, worker: int, name: str, label: str, tiles: int) -> None:
        """Worker ``worker`` (0-based; ``name`` in the log) took a job of ``tiles`` tiles."""
        bar = None
        if self._tty:
            bar = self._tqdm(total=tiles, unit="tile", desc=f"w{worker + 1} {label}"[:48], file=self._stream,
                             position=worker + 1, leave=False)
        else:
            print(f"{name}: {label}: scanning {tiles} tiles", flush=True)
        self._jobs[worker] = [label, 0, tiles, time.monotonic(), bar, name]

    def update(self, worker: int, done: int) -> None:
        """Worker ``worker`` has finished ``done`` tiles of its job."""
        job = self._jobs.get(worker)
        if job is None:
            return
        label, before, total, reported, bar, name = job
        job[1] = done
        if bar is not None:
            bar.update(done - before)
        elif time.monotonic() - reported >= self._interval and done < total:
            print(f"{name}: {label}: {done}/{total} tiles", flush=True)
            job[3] = time.monotonic()

    def finished(self, worker: int) -> None:
        """Worker ``worker``'s job came back (done or not)."""
        job = self._jobs.pop(worker, None)
        if job is not None and job[4] is not None:
            job[4].close()

    def scene_finished(self, line: str) -> None:
        """A scene ended (or an input never started); ``line`` says how, on stdout."""
        if self._overall is not None:
            self._overall.update(1)
        self._say(line)

    def close(self) -> None:
        for worker in list(self._jobs):
            self.finished(worker)
        if self._overall is not None:
            self._overall.close()
