"""The scene side of a scan: opening and checking rasters, the tile grid, strip reads, radiometry, inputs.

:mod:`~minescan.raster.sources` turns whatever the user points at (a raster,
a ``.SAFE``, a STAC item, band files) into one raster to read;
:mod:`~minescan.raster.scene` opens it, :mod:`~minescan.raster.grid` lays the
tiles, :mod:`~minescan.raster.strips` reads them and
:mod:`~minescan.raster.radiometry` renders them to the model's uint8 RGB.
"""
