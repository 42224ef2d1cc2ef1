"""Overnight runs: many scenes into one folder, resumable and fault-isolated.

Inputs of many kinds (stacked rasters, per-band files, ``.SAFE`` products,
STAC items) are resolved to something :func:`minescan.scan.scan_scene`
reads; each scene's result, quicklook and journal entry land in the run
folder, and a summary reports the whole run.  The command line calls
:func:`minescan.cli.runs.add_run_arguments` when it builds its parser
(cheap: no heavy imports) and :func:`minescan.runs.batch.run_many` to run.
"""
