"""One way in: every input a scan accepts resolved to one raster (:func:`~minescan.raster.sources.resolve.resolve`)."""
