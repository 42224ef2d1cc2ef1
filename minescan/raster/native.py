"""minescan's native module (``minescan._native``, built from ``native/`` by the top-level CMakeLists.txt).

It holds the scan's CPU hot path: rendering decoded bands to the model's uint8
pixels (:meth:`minescan.raster.radiometry.Radiometry.render`) and cutting tiles out
of the rendered strips straight into a batch (:mod:`minescan.raster.strips`).
``pip install .`` builds it (scikit-build-core, nanobind; a C++ compiler is all
it needs).  There is no numpy fallback: one implementation in the product, and
``testkit/reference_render.py`` keeps the numpy one the tests compare it with.
"""

from __future__ import annotations

from minescan.errors import MinescanError


class NativeModuleError(MinescanError):
    """minescan's compiled module is missing: the package was not built and installed."""


try:
    from minescan import _native as native
except ImportError as exc:  # a source checkout used without `pip install`
    raise NativeModuleError(
        f"minescan's native module is not built ({exc}): install the package with `pip install .` "
        "(or `pip install -e .`) from its folder, which compiles it (needs a C++ compiler)"
    ) from exc

__all__ = ["native", "NativeModuleError"]
