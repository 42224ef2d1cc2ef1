"""Quality masks: where a scene cannot be trusted (clouds, shadows, cirrus, snow, saturation, no data).

:mod:`~minescan.quality.scl` names Sentinel-2's scene classification classes; :mod:`~minescan.quality.mask`
holds a scene's mask as a value and measures it (masked share of boxes and tiles, the clear share, outlines).
"""
