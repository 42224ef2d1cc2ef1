"""Start-up time of the command line against ``python -c "import numpy, rasterio"``, measured in one run.

Each command runs ``--runs`` times in fresh processes, alternating, and the
median wall time is reported with its ratio to the baseline (the cost of
Python plus the two libraries every scan needs anyway).  Writes
``benchmarks/startup.md``.  Usage: ``.venv/bin/python benchmarks/startup.py``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

from machine import cpu_description  # benchmarks/machine.py, beside this script

HERE = Path(__file__).parent
COMMANDS = {
    'python -c "import numpy, rasterio"': [sys.executable, "-c", "import numpy, rasterio"],
    "minescan --help": [sys.executable, "-m", "minescan", "--help"],
    "minescan scan --help": [sys.executable, "-m", "minescan", "scan", "--help"],
    'python -c "import minescan"': [sys.executable, "-c", "import minescan"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--out", default=str(HERE / "startup.md"))
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.runs):
        for name, command in COMMANDS.items():
            start = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            times[name].append(time.perf_counter() - start)
    baseline = statistics.median(times[next(iter(COMMANDS))])
    lines = [f"Measured {date.today()} on {cpu_description()}, Python {sys.version.split()[0]}; "
             f"median of {args.runs} fresh processes each, alternating.", "",
             "| command | median s | vs numpy + rasterio |", "|---|---|---|"]
    for name, values in times.items():
        lines.append(f"| `{name}` | {statistics.median(values):.3f} | {statistics.median(values) / baseline:.2f}x |")
    text = "\n".join(lines) + "\n"
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
