"""What every training script here does after its steps: the loss summary of the smoke check, and ``main``."""

from __future__ import annotations

from typing import Callable

import numpy as np


def record_loss_fifths(log: dict, totals: list[float]) -> None:
    """Store the mean loss of the first and the last fifth of the steps in ``log`` (what --check-decrease compares)."""
    fifth = max(len(totals) // 5, 1)
    log["first_fifth_loss"], log["last_fifth_loss"] = float(np.mean(totals[:fifth])), float(np.mean(totals[-fifth:]))


def run(train: Callable[[object], dict], arguments: Callable[[list[str] | None], object], argv: list[str] | None) -> int:
    """Parse, train; with ``--check-decrease`` exit 1 unless the last fifth's loss is below the first fifth's."""
    args = arguments(argv)
    log = train(args)
    if getattr(args, "check_decrease", False):
        decreased = log["last_fifth_loss"] < log["first_fifth_loss"]
        print(f"loss {'decreased' if decreased else 'did NOT decrease'}: "
              f"{log['first_fifth_loss']:.4f} (first fifth) -> {log['last_fifth_loss']:.4f} (last fifth)")
        return 0 if decreased else 1
    return 0
