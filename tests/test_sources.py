"""Inputs of every shape resolve to the right bands, offset and nodata, checked pixel by pixel."""

import zipfile

import numpy as np
import pytest
import rasterio

from minescan.engine import load_detector
from minescan.results.evaluation import compare
from minescan.raster.sources.resolve import read_manifest, resolve
from minescan.raster.sources.source import SourceError, common_stem
from minescan.raster.sources.stac import gdal_href
from minescan.scan.scanner import Scanner
from testkit.products import ProductSpec, write_band_files, write_safe, write_stac_item
from minescan.synthetic.scene import SceneSpec, Truth, write_scene
from minescan.raster.radiometry import reflectance_gain

SPEC = SceneSpec(width=700, height=600, objects=0, seed=5, nodata_width=120)
TRUTH = Truth.of([(100, 100, 130, 125), (400, 300, 440, 330), (600, 500, 640, 540)], [1, 2, 1])
WINDOW = ((0, 600), (0, 700))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The scene as a plain B02, B03, B04, B08 GeoTIFF: DN = reflectance x 10000, no offset; red, green, blue first."""
    path = tmp_path_factory.mktemp("reference") / "scene.tif"
    write_scene(path, SPEC, TRUTH)
    with rasterio.open(path) as src:
        return src.read((3, 2, 1))


def read_rgb(source):
    with rasterio.open(source.dataset) as src:
        return src.read(source.bands or (1, 2, 3))


@pytest.mark.parametrize(
    "product,offset",
    [(ProductSpec(), -1000.0), (ProductSpec(level="L1C"), -1000.0), (ProductSpec(baseline="03.01"), 0.0)],
    ids=["L2A-05.10", "L1C-05.10", "L2A-03.01"],
)
def test_safe_product_reads_through_the_sentinel2_driver_with_its_offset(tmp_path, reference, product, offset):
    safe, _ = write_safe(tmp_path, SPEC, TRUTH, product)
    source = resolve(str(safe), tmp_path / "vrt")
    assert (source.kind, source.product_id, source.bands, source.offset, source.nodata) == ("safe", product.name, (1, 2, 3), offset, 0.0)
    assert f"SENTINEL2_{product.level}:{safe}/MTD_MSI{product.level}.xml:10m:EPSG_32633" in source.dataset.read_text()
    stored = read_rgb(source)
    valid = reference > 0
    assert (stored[~valid] == 0).all()  # nodata stays 0, the offset is not baked in
    np.testing.assert_array_equal(stored[valid].astype(np.int64) + offset, reference[valid])
    with rasterio.open(source.dataset) as src:
        assert src.crs.to_epsg() == 32633 and src.transform.c == SPEC.origin[0] and src.transform.f == SPEC.origin[1]
    # Rendered with the product's offset, the SAFE's pixels are exactly the reference's.
    np.testing.assert_array_equal(
        reflectance_gain(3, offset=offset).apply(stored), reflectance_gain(3).apply(reference)
    )


def test_safe_scan_with_and_without_the_offset(tmp_path, square_model):
    safe, truth = write_safe(tmp_path, SPEC, TRUTH)
    source = resolve(str(safe), tmp_path / "vrt")
    scanner = Scanner(load_detector(square_model))
    found = scanner.scan(source)
    d = found.detections
    agreement = compare(d.boxes, d.scores, d.classes, truth.boxes, truth.classes)
    assert agreement.matched == 3 and agreement.detections == 3
    assert found.plan.origins["offset"] == "product" and found.plan.origins["nodata"] == "product"
    ignored = scanner.plan(source, product_offset=False)
    assert ignored.origins["offset"] == "default" and ignored.nodata == 0.0


def test_safe_as_zip_metadata_file_and_subdataset_string(tmp_path, reference):
    safe, _ = write_safe(tmp_path, SPEC, TRUTH)
    archive = tmp_path / f"{safe.name}.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for file in safe.rglob("*"):
            z.write(file, file.relative_to(tmp_path))
    subdataset = f"SENTINEL2_L2A:{safe}/MTD_MSIL2A.xml:10m:EPSG_32633"
    for text in (str(archive), str(safe / "MTD_MSIL2A.xml"), subdataset):
        source = resolve(text, tmp_path / "vrt")
        assert source.offset == -1000.0 and source.product_id == ProductSpec().name
        np.testing.assert_array_equal(read_rgb(source)[reference > 0].astype(np.int64) - 1000, reference[reference > 0])


def test_incomplete_safe_product_is_refused(tmp_path):
    safe, _ = write_safe(tmp_path, SPEC, TRUTH)
    next(safe.rglob("*_B03_10m.jp2")).unlink()
    with pytest.raises(SourceError, match=r"product incomplete, GRANULE/.*_B03_10m\.jp2 is missing"):
        resolve(str(safe), tmp_path / "vrt")


@pytest.mark.parametrize("driver", ["GTiff", "JP2OpenJPEG"])
def test_band_folder_stacks_red_green_blue(tmp_path, reference, driver):
    files, _ = write_band_files(tmp_path / "bands", SPEC, TRUTH, driver=driver)
    source = resolve(str(tmp_path / "bands"), tmp_path / "vrt")
    assert (source.kind, source.product_id, source.bands, source.offset, source.nodata) == ("bands", "T33UUP_20230101T100000", (1, 2, 3), None, 0.0)
    np.testing.assert_array_equal(read_rgb(source), reference)
    with rasterio.open(source.dataset) as src:
        assert src.descriptions == ("B04", "B03", "B02") and src.nodata == 0


def test_band_list_in_any_order(tmp_path, reference):
    files, _ = write_band_files(tmp_path / "bands", SPEC, TRUTH, prefix="", suffix="")
    text = ",".join(str(files[b]) for b in ("B02", "B08", "B04", "B03"))
    source = resolve(text, tmp_path / "vrt")
    np.testing.assert_array_equal(read_rgb(source), reference)
    assert source.product_id == "B02"  # nothing shared by the names: the first file's stem


def test_band_folder_without_a_band(tmp_path):
    files, _ = write_band_files(tmp_path / "bands", SPEC, TRUTH)
    files["B03"].unlink()
    with pytest.raises(SourceError, match="bands: no B03 file"):
        resolve(str(tmp_path / "bands"), tmp_path / "vrt")


def test_stac_item_with_relative_hrefs_and_raster_offset(tmp_path, reference):
    files, _ = write_band_files(tmp_path / "cog", SPEC, TRUTH, product=ProductSpec())  # stored with +1000
    item = write_stac_item(tmp_path / "items" / "item.json", files, item_id="S2B_33UUP_20230101_0_L2A", offset=-0.1)
    source = resolve(str(item), tmp_path / "vrt")
    assert (source.kind, source.product_id, source.offset, source.nodata) == ("stac", "S2B_33UUP_20230101_0_L2A", -1000.0, 0.0)
    stored = read_rgb(source)
    valid = reference > 0
    np.testing.assert_array_equal(stored[valid].astype(np.int64) - 1000, reference[valid])


def test_stac_item_without_a_red_asset(tmp_path):
    files, _ = write_band_files(tmp_path / "cog", SPEC, TRUTH)
    del files["B04"]
    item = write_stac_item(tmp_path / "item.json", files, item_id="x")
    with pytest.raises(SourceError, match=r"item.json: no red asset \(keys: blue, green, nir\)"):
        resolve(str(item), tmp_path / "vrt")


def test_remote_hrefs_become_gdal_virtual_paths(tmp_path):
    assert gdal_href("https://example.com/a/B04.tif", tmp_path) == "/vsicurl/https://example.com/a/B04.tif"
    assert gdal_href("s3://bucket/key/B04.tif", tmp_path) == "/vsis3/bucket/key/B04.tif"
    assert gdal_href("../B04.tif", tmp_path / "items") == str(tmp_path / "items" / ".." / "B04.tif")
    assert gdal_href("file:///data/B04.tif", tmp_path) == "/data/B04.tif"


def test_manifest_comments_and_relative_paths(tmp_path):
    (tmp_path / "lists").mkdir()
    manifest = tmp_path / "lists" / "tonight.txt"
    manifest.write_text("# tonight\n\n../a.tif\n/data/b.SAFE  # a product\nc_B04.tif, c_B03.tif,c_B02.tif\n"
                        "SENTINEL2_L2A:/p/MTD_MSIL2A.xml:10m:EPSG_32633\nhttps://example.com/d.tif\n")
    base = tmp_path / "lists"
    assert read_manifest(manifest) == [
        str(base / ".." / "a.tif"), "/data/b.SAFE", ",".join(str(base / f"c_{b}.tif") for b in ("B04", "B03", "B02")),
        "SENTINEL2_L2A:/p/MTD_MSIL2A.xml:10m:EPSG_32633", "https://example.com/d.tif",
    ]


def test_unknown_input_and_shared_name_stems(tmp_path):
    with pytest.raises(SourceError, match="scene not found: .*none.tif"):
        resolve(str(tmp_path / "none.tif"), tmp_path / "vrt")
    assert common_stem(["T33UUP_20230101T100000_B02_10m", "T33UUP_20230101T100000_B04_10m"]) == "T33UUP_20230101T100000"
    assert common_stem(["B02", "B03"]) == ""
