"""Overnight runs: many scenes into one folder, resumable and fault-isolated.

Every input is resolved by :mod:`minescan.raster.sources` and planned and
scanned by the same :class:`~minescan.Scanner` as a single scene; each
scene's result, quicklook and journal entry land in the run folder, and a
summary reports the whole run (:func:`minescan.runs.batch.run_many`).
"""
