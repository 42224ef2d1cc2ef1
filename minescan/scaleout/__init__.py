"""Scale-out: runs across a Ray cluster (:mod:`.ray_run`), and a Ray Data building block (:mod:`.ray_data`).

``ray`` is an optional extra (``pip install 'minescan[ray]'``), imported lazily.
"""
