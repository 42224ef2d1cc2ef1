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
