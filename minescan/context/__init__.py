"""What lies around a detection on the map: licensed concessions (:mod:`minescan.context.concessions`)."""

from minescan.context.concessions import (
    ConcessionError,
    ConcessionFieldError,
    ConcessionJoin,
    ConcessionLayer,
    open_concessions,
    outside_counts,
    partly_outside_counts,
)

__all__ = [
    "ConcessionError",
    "ConcessionFieldError",
    "ConcessionJoin",
    "ConcessionLayer",
    "open_concessions",
    "outside_counts",
    "partly_outside_counts",
]
