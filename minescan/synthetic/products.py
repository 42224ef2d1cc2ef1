"""Sentinel-2 distributions of a synthetic scene: ``.SAFE`` products, band files, STAC items.

(Moved here from ``testkit/products.py``, which re-exports every name, so that
an installed minescan can write the README demo's products.)

Real products reach minescan in several shapes; these writers produce each
from a scene of :mod:`minescan.synthetic.scene`, so that every shape can be
scanned and checked against the same truth.

:func:`write_safe` writes the smallest product GDAL's SENTINEL2 driver opens
(found by trying, GDAL 3.10): ``MTD_MSIL2A.xml``/``MTD_MSIL1C.xml`` with
``Product_Info`` (``PRODUCT_URI``, from which GDAL derives the band file
names; ``PROCESSING_BASELINE``; ``Query_Options/PRODUCT_FORMAT`` =
``SAFE_COMPACT``; the granule's ``IMAGE_FILE`` list) and the offsets per
band, plus the granule's ``MTD_TL.xml`` (CRS, size, upper-left corner),
plus lossless JPEG 2000 bands B02, B03, B04, B08 (and constant AOT, WVP
for L2A).  With ``scl`` (uint8, 20 m: ``ceil(H/2) x ceil(W/2)``), an L2A
product also gets ``IMG_DATA/R20m/<stem>_SCL_20m.jp2`` (lossless, the 10 m
transform with pixel size 20 m, same CRS), listed in the ``IMAGE_FILE`` list
as real products list it; GDAL's 10 m subdataset is unchanged by it.  From baseline 04.00 the
bands hold DN = reflectance x 10000 + 1000 (offset -1000), as real products
do; DN 0 stays nodata.  ``manifest.safe`` is written for completeness; the
driver does not read it.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

from minescan.synthetic.scene import BANDS, SceneSpec, Truth, write_scene

ASSET_KEYS = {"B02": "blue", "B03": "green", "B04": "red", "B08": "nir"}


@dataclass(frozen=True)
class ProductSpec:
    """How to package the scene: level (``L2A``/``L1C``), baseline, offset, names."""

    level: str = "L2A"
    baseline: str = "05.10"
    offset: int = -1000
    tile: str = "T33UUP"
    sensing: str = "20230101T100000"
    satellite: str = "S2B"

    @property
    def name(self) -> str:
        return f"{self.satellite}_MSI{self.level}_{self.sensing}_N{self.baseline.replace('.', '')}_R022_{self.tile}_{self.sensing}"

    @property
    def applies_offset(self) -> bool:
        return float(self.baseline) >= 4.0


def _scene_dn(spec: SceneSpec, truth: Truth | None) -> tuple[np.ndarray, Truth, dict]:
    """The scene's four bands [4, H, W] and its profile (via a temporary GeoTIFF)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scene.tif"
        truth = write_scene(path, spec, truth)
        with rasterio.open(path) as src:
            return src.read(), truth, src.profile


def _write_band(path: Path, data: np.ndarray, profile: dict, driver: str) -> None:
    options = dict(QUALITY=100, REVERSIBLE="YES") if driver == "JP2OpenJPEG" else dict(tiled=True, compress="deflate")
    with rasterio.open(path, "w", driver=driver, width=data.shape[1], height=data.shape[0], count=1, dtype=data.dtype.name,
                       crs=profile["crs"], transform=profile["transform"], **options) as dst:
        dst.write(data, 1)


SCL_FACTOR = 2  # the SCL is 20 m over 10 m bands


def _check_scl(scl: np.ndarray, width: int, height: int, product: "ProductSpec") -> np.ndarray:
    """``scl`` as uint8 [ceil(H/2), ceil(W/2)]; ValueError for another shape or an L1C product."""
    if product.level != "L2A":
        raise ValueError(f"an SCL layer belongs to an L2A product, got level {product.level!r}")
    scl = np.asarray(scl)
    rows, cols = -(-height // SCL_FACTOR), -(-width // SCL_FACTOR)
    if scl.shape != (rows, cols) or scl.dtype != np.uint8:
        raise ValueError(f"the SCL of a {width} x {height} px scene is uint8 {rows} x {cols}, got {scl.dtype} {scl.shape}")
    return scl


def _scl_file(image_dir: str, stem: str) -> str:
    """The SCL image file (no extension), beside the R10m folder as in real products."""
    return f"{image_dir.removesuffix('/R10m')}/R20m/{stem}_SCL_20m"


def _write_scl(root: Path, image_dir: str, stem: str, scl: np.ndarray, crs, transform) -> str:
    """Write the SCL as lossless JPEG 2000 at 20 m; return its IMAGE_FILE entry."""
    image = _scl_file(image_dir, stem)
    (root / image).parent.mkdir(parents=True, exist_ok=True)
    _write_band(root / f"{image}.jp2", scl, dict(crs=crs, transform=transform * Affine.scale(SCL_FACTOR)), "JP2OpenJPEG")
    return image


def _offset_dn(bands: np.ndarray, product: ProductSpec) -> np.ndarray:
    """DN as the product stores it: reflectance x 10000 - offset where valid, 0 where nodata."""
    if not product.applies_offset:
        return bands
    return np.where(bands == 0, 0, bands.astype(np.int64) - product.offset).astype(np.uint16)


def _main_metadata(product: ProductSpec, image_files: list[str], granule: str) -> str:
    level = "Level-2A" if product.level == "L2A" else "Level-1C"
    images = "\n".join(f"          <IMAGE_FILE>{f}</IMAGE_FILE>" for f in image_files)
    kind = "BOA" if product.level == "L2A" else "RADIO"
    offsets = "\n".join(f'      <{kind}_ADD_OFFSET band_id="{i}">{product.offset}</{kind}_ADD_OFFSET>' for i in range(13))
    offset_list = f"    <{kind}_ADD_OFFSET_VALUES_LIST>\n{offsets}\n    </{kind}_ADD_OFFSET_VALUES_LIST>" if product.level == "L2A" \
        else f"    <Radiometric_Offset_List>\n{offsets}\n    </Radiometric_Offset_List>"
    quantification = "BOA_QUANTIFICATION_VALUE" if product.level == "L2A" else "QUANTIFICATION_VALUE"
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<n1:{level}_User_Product xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_{level}.xsd">
  <n1:General_Info>
    <Product_Info>
      <PRODUCT_URI>{product.name}.SAFE</PRODUCT_URI>
      <PROCESSING_LEVEL>{level}</PROCESSING_LEVEL>
      <PRODUCT_TYPE>S2MSI{product.level[1:]}</PRODUCT_TYPE>
      <PROCESSING_BASELINE>{product.baseline}</PROCESSING_BASELINE>
      <Query_Options completeSingleTile="true">
        <PRODUCT_FORMAT>SAFE_COMPACT</PRODUCT_FORMAT>
      </Query_Options>
      <Product_Organisation>
        <Granule_List>
          <Granule granuleIdentifier="{granule}" imageFormat="JPEG2000">
{images}
          </Granule>
        </Granule_List>
      </Product_Organisation>
    </Product_Info>
    <Product_Image_Characteristics>
      <Special_Values><SPECIAL_VALUE_TEXT>NODATA</SPECIAL_VALUE_TEXT><SPECIAL_VALUE_INDEX>0</SPECIAL_VALUE_INDEX></Special_Values>
      <QUANTIFICATION_VALUES_LIST><{quantification} unit="none">10000</{quantification}></QUANTIFICATION_VALUES_LIST>
{offset_list if product.applies_offset else ""}
    </Product_Image_Characteristics>
  </n1:General_Info>
</n1:{level}_User_Product>
"""


def _tile_metadata(product: ProductSpec, spec: SceneSpec) -> str:
    level = "Level-2A" if product.level == "L2A" else "Level-1C"
    x, y = spec.origin
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<n1:{level}_Tile_ID xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/S2_PDI_{level}_Tile_Metadata.xsd">
  <n1:Geometric_Info>
    <Tile_Geocoding>
      <HORIZONTAL_CS_CODE>EPSG:{spec.epsg}</HORIZONTAL_CS_CODE>
      <Size resolution="10"><NROWS>{spec.height}</NROWS><NCOLS>{spec.width}</NCOLS></Size>
      <Geoposition resolution="10"><ULX>{x:.0f}</ULX><ULY>{y:.0f}</ULY><XDIM>10</XDIM><YDIM>-10</YDIM></Geoposition>
    </Tile_Geocoding>
  </n1:Geometric_Info>
</n1:{level}_Tile_ID>
"""


_MANIFEST = """<?xml version="1.0" encoding="UTF-8"?>
<xfdu:XFDU xmlns:xfdu="urn:ccsds:schema:xfdu:1" version="esa/safe/sentinel/1.1/sentinel-2/msi/archive_l{level}_user_product">
  <informationPackageMap><xfdu:contentUnit textInfo="SENTINEL-2 MSI Level-{level_text} User Product"/></informationPackageMap>
</xfdu:XFDU>
"""


def _product_layout(folder: str | os.PathLike[str], product: ProductSpec) -> tuple[Path, str, str, str, list[str]]:
    """The product's root (created with its image folder), granule, file stem, image folder and band files (no extension)."""
    root = Path(folder) / f"{product.name}.SAFE"
    granule = f"{product.level}_{product.tile}_A000001_{product.sensing}"
    stem = f"{product.tile}_{product.sensing}"
    image_dir = f"GRANULE/{granule}/IMG_DATA" + ("/R10m" if product.level == "L2A" else "")
    suffix = "_10m" if product.level == "L2A" else ""
    (root / image_dir).mkdir(parents=True)
    return root, granule, stem, image_dir, [f"{image_dir}/{stem}_{band}{suffix}" for band in BANDS]


def write_safe(folder: str | os.PathLike[str], spec: SceneSpec = SceneSpec(), truth: Truth | None = None,
               product: ProductSpec = ProductSpec(), *, scl: np.ndarray | None = None) -> tuple[Path, Truth]:
    """Write the scene as a ``.SAFE`` product in ``folder`` (pixel size 10 m); return its path and truth.

    ``scl``: the L2A scene classification at 20 m (see the module docstring).
    """
    if scl is not None:
        scl = _check_scl(scl, spec.width, spec.height, product)
    bands, truth, profile = _scene_dn(spec, truth)
    root, granule, stem, image_dir, image_files = _product_layout(folder, product)
    for data, image in zip(_offset_dn(bands, product), image_files):
        _write_band(root / f"{image}.jp2", data, profile, "JP2OpenJPEG")
    if product.level == "L2A":  # GDAL's 10 m subdataset also holds these and warns when they are missing
        for extra in ("AOT", "WVP"):
            _write_band(root / f"{image_dir}/{stem}_{extra}_10m.jp2", np.full(bands.shape[1:], 100, np.uint16), profile, "JP2OpenJPEG")
    listed = image_files if scl is None else [*image_files, _write_scl(root, image_dir, stem, scl, profile["crs"], profile["transform"])]
    (root / f"MTD_MSI{product.level}.xml").write_text(_main_metadata(product, listed, granule))
    (root / "GRANULE" / granule / "MTD_TL.xml").write_text(_tile_metadata(product, spec))
    (root / "manifest.safe").write_text(_MANIFEST.format(level=product.level[1:].lower(), level_text=product.level[1:]))
    return root, truth


def write_band_files(folder: str | os.PathLike[str], spec: SceneSpec = SceneSpec(), truth: Truth | None = None,
                     *, prefix: str = "T33UUP_20230101T100000_", suffix: str = "_10m", driver: str = "GTiff",
                     product: ProductSpec = ProductSpec(baseline="03.00")) -> tuple[dict[str, Path], Truth]:
    """Write the scene's bands one per file (``<prefix>B02<suffix>.tif`` ...); return {band: path} and the truth.

    DN are stored as ``product`` would store them (by default without offset).
    """
    bands, truth, profile = _scene_dn(spec, truth)
    bands = _offset_dn(bands, product)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    extension = ".jp2" if driver == "JP2OpenJPEG" else ".tif"
    paths = {}
    for data, band in zip(bands, BANDS):
        paths[band] = folder / f"{prefix}{band}{suffix}{extension}"
        _write_band(paths[band], data, profile, driver)
    return paths, truth


def write_stac_item(path: str | os.PathLike[str], band_files: dict[str, Path], *, item_id: str,
                    offset: float | None = None, nodata: float | None = 0) -> Path:
    """Write a STAC item at ``path`` whose assets link ``band_files`` by relative hrefs.

    ``offset`` (reflectance units, e.g. -0.1) goes into each asset's ``raster:bands``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    assets = {}
    for band, file in band_files.items():
        raster = {"scale": 0.0001, **({"offset": offset} if offset is not None else {}), **({"nodata": nodata} if nodata is not None else {})}
        assets[ASSET_KEYS[band]] = {
            "href": os.path.relpath(file, path.parent),
            "type": "image/tiff; application=geotiff; profile=cloud-optimized",
            "eo:bands": [{"name": band, "common_name": ASSET_KEYS[band]}],
            "raster:bands": [raster],
            "roles": ["data"],
        }
    item = {
        "type": "Feature", "stac_version": "1.0.0", "id": item_id,
        "stac_extensions": ["https://stac-extensions.github.io/eo/v1.1.0/schema.json",
                            "https://stac-extensions.github.io/raster/v1.1.0/schema.json"],
        "geometry": None, "properties": {"datetime": "2023-01-01T10:00:00Z", "s2:processing_baseline": "05.10"},
        "links": [], "assets": assets,
    }
    path.write_text(json.dumps(item, indent=2))
    return path


# --- a .SAFE product from any 4-band (B02, B03, B04, B08) GeoTIFF, streamed ---------------------------------

# Real Sentinel-2 bands are JPEG 2000 in 1024 px tiles; lossless (5/3 reversible wavelet, all layers).
JP2_TILED = dict(QUALITY=100, REVERSIBLE="YES", BLOCKXSIZE=1024, BLOCKYSIZE=1024, RESOLUTIONS=6)


def _raster_geometry(src) -> SceneSpec:
    """A SceneSpec carrying only what ``_tile_metadata`` reads (size, EPSG, upper-left corner) of an open raster."""
    epsg = src.crs.to_epsg()
    if epsg is None or abs(src.transform.a - 10) > 1e-9 or abs(src.transform.e + 10) > 1e-9:
        raise ValueError(f"{src.name}: a .SAFE needs a 10 m raster in an EPSG CRS, got {src.crs} at {src.res}")
    return SceneSpec(width=src.width, height=src.height, objects=0, epsg=epsg, origin=(src.transform.c, src.transform.f))


def _encode_band(src, index: int, target: Path, product: ProductSpec, tmp: Path, options: dict, strip: int = 1024,
                 constant: int | None = None) -> None:
    """Band ``index`` of ``src`` (or ``constant``) as the product stores it, into a lossless tiled JPEG 2000 at ``target``.

    The DN go strip by strip into a temporary tiled GeoTIFF, which GDAL's
    JP2OpenJPEG CreateCopy then encodes tile row by tile row, so memory stays
    bounded by a strip and a row of 1024 px tiles.
    """
    from rasterio.shutil import copy as gdal_copy
    from rasterio.windows import Window

    staging = tmp / f"{target.stem}.tif"
    profile = dict(driver="GTiff", width=src.width, height=src.height, count=1, dtype="uint16", crs=src.crs,
                   transform=src.transform, tiled=True, blockxsize=1024, blockysize=1024)
    with rasterio.open(staging, "w", **profile) as dst:
        for top in range(0, src.height, strip):
            window = Window(0, top, src.width, min(strip, src.height - top))
            if constant is None:
                data = _offset_dn(src.read(index, window=window), product)
            else:
                data = np.full((window.height, window.width), constant, np.uint16)
            dst.write(data, 1, window=window)
    gdal_copy(staging, target, driver="JP2OpenJPEG", **options)
    staging.unlink()


def write_safe_from_raster(folder: str | os.PathLike[str], raster: str | os.PathLike[str],
                           product: ProductSpec = ProductSpec(), *, jp2_options: dict | None = None,
                           scl: np.ndarray | None = None) -> Path:
    """Write the 4-band (B02, B03, B04, B08) uint16 GeoTIFF ``raster`` as a ``.SAFE`` product in ``folder``; return its path.

    Like :func:`write_safe` (same metadata, same offset rule, AOT/WVP for
    L2A), but for any such raster of any size (e.g. a full 10980 px mining
    scene), with bands encoded as real products are: lossless JPEG 2000 in
    1024 x 1024 px tiles (:data:`JP2_TILED`, overridable by ``jp2_options``),
    one band at a time without holding the scene in memory.  ``scl``: the
    L2A scene classification at 20 m (see the module docstring; it is small
    enough to hold: a quarter of one band's pixels, one byte each).
    """
    options = dict(JP2_TILED, **(jp2_options or {}))
    root, granule, stem, image_dir, image_files = _product_layout(folder, product)
    with rasterio.open(raster) as src, tempfile.TemporaryDirectory(dir=folder, prefix=".safe-staging-") as tmp:
        if src.count != len(BANDS) or src.dtypes[0] != "uint16":
            raise ValueError(f"{raster}: expected {len(BANDS)} uint16 bands ({', '.join(BANDS)}), got {src.count} {src.dtypes[0]}")
        geometry = _raster_geometry(src)
        for index, image in enumerate(image_files, start=1):
            _encode_band(src, index, root / f"{image}.jp2", product, Path(tmp), options)
        if product.level == "L2A":  # as write_safe: the 10 m subdataset also holds these
            for extra in ("AOT", "WVP"):
                _encode_band(src, 1, root / f"{image_dir}/{stem}_{extra}_10m.jp2", product, Path(tmp), options, constant=100)
        listed = image_files
        if scl is not None:
            scl = _check_scl(scl, src.width, src.height, product)
            listed = [*image_files, _write_scl(root, image_dir, stem, scl, src.crs, src.transform)]
    (root / f"MTD_MSI{product.level}.xml").write_text(_main_metadata(product, listed, granule))
    (root / "GRANULE" / granule / "MTD_TL.xml").write_text(_tile_metadata(product, geometry))
    (root / "manifest.safe").write_text(_MANIFEST.format(level=product.level[1:].lower(), level_text=product.level[1:]))
    return root
