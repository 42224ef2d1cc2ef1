"""``minescan`` with inference that announces itself and takes its time: for interrupting a real process.

``python -m testkit.slow_inference MARKER SECONDS <minescan arguments...>`` runs
the ordinary command line (:func:`minescan.cli.main`, exit code and all) with
one change: every ONNX Runtime ``detect`` call first creates the file
``MARKER`` (so a test knows, without guessing by time, that inference is
under way) and then runs the real inference plus ``SECONDS`` of sleep, so the
scan is still inside inference when the test's signal arrives.
:func:`slow_workers` does the same (the sleep only) inside Ray workers.  A
test fixture, not part of minescan.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    marker, seconds, rest = Path(argv[0]), float(argv[1]), argv[2:]
    # Ctrl-C as a terminal delivers it, whatever the test process left to its children: a parent that ignores
    # or blocks SIGINT (it happened in full test runs after the in-process TensorFlow exports: the child exited
    # 0 as if never interrupted) passes that on through exec, and Python then installs no handler.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])
    signal.signal(signal.SIGINT, signal.default_int_handler)

    from minescan.cli import main as minescan_main
    from minescan.engine.onnxruntime_backend import OnnxRuntimeDetector

    detect = OnnxRuntimeDetector.detect

    def announced(self, tiles, score_threshold=0.0):
        marker.touch()
        found = detect(self, tiles, score_threshold)
        time.sleep(seconds)
        return found

    OnnxRuntimeDetector.detect = announced
    return minescan_main(rest)


SLOW_VARIABLE = "MINESCAN_TEST_SLOW_SECONDS"


def slow_workers() -> None:
    """A Ray ``worker_process_setup_hook``: every ONNX Runtime ``detect`` call in the worker sleeps
    ``$MINESCAN_TEST_SLOW_SECONDS`` after the real inference, so a test can kill a worker mid-scene."""
    import os

    from minescan.engine.onnxruntime_backend import OnnxRuntimeDetector

    seconds = float(os.environ.get(SLOW_VARIABLE, "0"))
    detect = OnnxRuntimeDetector.detect

    def slow(self, tiles, score_threshold=0.0):
        found = detect(self, tiles, score_threshold)
        time.sleep(seconds)
        return found

    OnnxRuntimeDetector.detect = slow


def poisoned_workers() -> None:
    """A Ray ``worker_process_setup_hook``: a worker given a scene whose input names ``poison`` dies at once
    (``os._exit``), as a process killed by a scene that exhausts its memory would."""
    import os

    from minescan.scaleout.worker import SceneWorker

    run = SceneWorker.run

    def poisoned(self, job):
        if "poison" in job.key:
            os._exit(1)
        return run(self, job)

    SceneWorker.run = poisoned


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
