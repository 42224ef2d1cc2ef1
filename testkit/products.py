"""Sentinel-2 distributions of a synthetic scene: ``.SAFE`` products, band files, STAC items.

The writers live in :mod:`minescan.synthetic.products` (so that an installed
minescan can write the demo's products); every name is re-exported here, so
``from testkit.products import ...`` keeps working.
"""

from minescan.synthetic.products import (  # noqa: F401
    ASSET_KEYS,
    JP2_TILED,
    SCL_FACTOR,
    ProductSpec,
    _check_scl,
    _encode_band,
    _main_metadata,
    _offset_dn,
    _product_layout,
    _raster_geometry,
    _scene_dn,
    _scl_file,
    _tile_metadata,
    _write_band,
    _write_scl,
    _MANIFEST,
    write_band_files,
    write_safe,
    write_safe_from_raster,
    write_stac_item,
)
