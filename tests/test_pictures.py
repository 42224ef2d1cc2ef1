"""Pictures a person reads: quicklooks with legend, scale bar and north arrow, and before/after chips of a site.

Every picture is written to a real PNG from a real GeoTIFF the test makes, and read back with PIL.
"""

from __future__ import annotations


import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.transform import from_origin

from minescan.model.detections import SceneDetections
from minescan.quality.mask import QualityMask
from minescan.raster.radiometry import percentile_stretch
from minescan.results import pictures
from minescan.results.chips import ChipError, ChipSource, read_panel, write_chip
from minescan.results.quicklook import Decorations, write_quicklook
from minescan.synthetic.scene import SceneSpec, Truth, write_scene

W, H = 320, 240
BANDS = (3, 2, 1)
BOXES = [(20, 30, 44, 50), (100, 40, 130, 60), (200, 150, 230, 170), (60, 180, 90, 204), (250, 30, 270, 44)]
CLASSES = [1, 2, 1, 2, 1]
SPEC = SceneSpec(width=W, height=H, objects=0, seed=4)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    path = tmp_path_factory.mktemp("pictures") / "T30NVL_20261127.tif"
    truth = write_scene(path, SPEC, Truth.of(BOXES, CLASSES))
    return path, truth


def read_rgb(path) -> np.ndarray:
    with Image.open(path) as png:
        assert png.format == "PNG" and png.mode == "RGB"
        return np.asarray(png).astype(int)


def plain_base(path) -> np.ndarray:
    """The scene stretched 2-98 % at full size: what the quicklook's map shows before anything is drawn."""
    with rasterio.open(path) as src:
        data = src.read(list(BANDS))
    nodata = np.all(data == 0, axis=0)
    return percentile_stretch(data, ~nodata, 2.0, 98.0).apply(data, nodata).astype(int)


def near_boxes(boxes, margin: int) -> np.ndarray:
    """Pixels within ``margin`` px of any box."""
    near = np.zeros((H, W), bool)
    for x0, y0, x1, y1 in np.asarray(boxes, int).reshape(-1, 4):
        near[max(0, y0 - margin) : y1 + margin, max(0, x0 - margin) : x1 + margin] = True
    return near


def detections(truth) -> SceneDetections:
    return SceneDetections(truth.boxes, np.ones(len(truth.boxes)), truth.classes)


def panel_of(image: np.ndarray) -> np.ndarray:
    return image[:, W + 1 :]


def longest_run(row: np.ndarray, colour) -> int:
    """The longest run of ``colour`` pixels along ``row`` [N, 3]."""
    hits = np.all(row == colour, axis=-1)
    best = run = 0
    for hit in hits:
        run = run + 1 if hit else 0
        best = max(best, run)
    return best


# --- the quicklook -------------------------------------------------------------------------------------------------

def test_the_map_is_the_scene_at_the_top_left_and_the_legend_panel_is_beside_it(scene, tmp_path):
    path, truth = scene
    png = write_quicklook(tmp_path / "q.png", path, detections(truth), bands=BANDS, nodata=None, max_size=1024)
    image = read_rgb(png)
    assert image.shape[0] >= H and image.shape[1] > W + 150  # the map at full size, a panel at its right
    base = plain_base(path)
    away = ~near_boxes(truth.boxes, 1)
    assert np.array_equal(image[:H, :W][away], base[away])  # away from the outlines: exactly the scene
    panel = panel_of(image)
    assert np.all(panel[-2:] == pictures.PANEL)  # its background...
    assert (np.abs(panel - np.array(pictures.PANEL)).sum(axis=-1) > 300).sum() > 200  # ...and writing on it


def test_each_detection_is_outlined_in_its_class_colour_and_flagged_ones_are_dashed(scene, tmp_path):
    path, truth = scene
    flagged = np.array([False, False, True, False, False])
    decorations = Decorations(labels={1: "illegal mining", 2: "legal mine"}, flagged=flagged)
    image = read_rgb(write_quicklook(tmp_path / "q.png", path, detections(truth), bands=BANDS, nodata=None,
                                     max_size=1024, decorations=decorations))
    for (x0, y0, x1, y1), klass, flag in zip(truth.boxes.astype(int), truth.classes, flagged):
        colour = pictures.class_colour(klass)
        assert tuple(image[y0, x0 + 1]) == colour and tuple(image[y1 - 1, x0 + 1]) == colour  # top and bottom edges
        assert tuple(image[y0 + 1, x1 - 1]) == colour  # the right edge
        assert tuple(image[y0 + 1, x0 + 1]) == colour  # 2 px thick, inside the box
        assert tuple(image[y0 + 3, x0 + 3]) != colour  # the site itself is not painted over
        gap = x0 + pictures.DASH[0] + 1  # in the first gap of a dashed top edge
        assert (tuple(image[y0, gap]) == colour) is not bool(flag)
    assert pictures.class_colour(1) == (255, 230, 0) and pictures.class_colour(2) == (0, 230, 255)
    assert pictures.class_colour(6) == pictures.class_colour(1)


def test_new_sites_are_ringed_in_red_so_even_a_tiny_one_shows(scene, tmp_path):
    path, truth = scene
    tiny = np.array([[160.0, 100.0, 162.0, 102.0]])  # 2 x 2 px, where nothing else is drawn
    highlight = np.concatenate([truth.boxes[:1], tiny])
    image = read_rgb(write_quicklook(tmp_path / "q.png", path, detections(truth), bands=BANDS, nodata=None,
                                     max_size=1024, decorations=Decorations(highlight=highlight)))
    red = np.all(image[:H, :W] == pictures.HIGHLIGHT, axis=-1)
    x0, y0, x1, y1 = truth.boxes[0].astype(int)
    assert red[y0 - 2, (x0 + x1) // 2] and red[(y0 + y1) // 2, x1 + 1]  # a thick outline just outside the box
    assert tuple(image[y0, x0 + 1]) == pictures.class_colour(truth.classes[0])  # the class outline still shows
    rows = np.nonzero(red[:, 161])[0]
    rows = rows[(rows > 60) & (rows < 140)]
    assert rows.max() - rows.min() >= pictures.RING_MIN - 2  # the ring around the tiny site
    assert not red[130:].any()  # and nowhere else


def test_masked_cells_are_shaded_and_clear_cells_untouched(scene, tmp_path):
    path, truth = scene
    cells = np.zeros((H // 2, W // 2), bool)
    cells[:, 80:] = True  # the right half of the scene, in 2 px cells
    mask = QualityMask(cells, 2, W, H, "test")
    image = read_rgb(write_quicklook(tmp_path / "q.png", path, SceneDetections.empty(), bands=BANDS, nodata=None,
                                     max_size=1024, decorations=Decorations(masked=mask)))[:H, :W]
    base = plain_base(path)
    assert np.array_equal(image[:, :160], base[:, :160])
    masked, under = image[:, 160:], base[:, 160:]
    hatch = np.all(masked == pictures.MASK_HATCH, axis=-1)
    assert 0.05 < hatch.mean() < 0.25  # hatched...
    spread = lambda a: (a.max(axis=-1) - a.min(axis=-1)).mean()  # noqa: E731
    assert spread(masked[~hatch]) < 0.6 * spread(under[~hatch])  # ...greyer...
    assert np.abs(masked[~hatch] - 225).mean() < 0.6 * np.abs(under[~hatch] - 225).mean()  # ...and washed light
    assert mask.clear_share == pytest.approx(0.5)


def test_a_quicklook_without_a_crs_has_no_scale_bar_nor_arrow_but_still_a_legend(tmp_path):
    base = np.random.default_rng(0).integers(0, 200, (100, 120, 3)).astype(np.uint8)
    image = pictures.draw_quicklook(base, 1.0, np.array([[10.0, 10.0, 30.0, 30.0]]), np.array([1]), title="plain.tif",
                                    crs=None, transform=from_origin(0, 0, 10, 10))
    located = pictures.draw_quicklook(base, 1.0, np.array([[10.0, 10.0, 30.0, 30.0]]), np.array([1]), title="plain.tif",
                                      crs="EPSG:32630", transform=from_origin(500000, 100000, 10, 10))
    assert max(longest_run(row, (250, 250, 250)) for row in located[:, 121:]) >= 20  # with a CRS: a bar
    panel = image[:, 121:]
    assert max(longest_run(row, (250, 250, 250)) for row in panel) < 20  # no bar: nothing long and white
    assert (np.abs(panel - np.array(pictures.PANEL)).sum(axis=-1) > 300).sum() > 100  # the title and class 1


def test_the_scale_bar_is_as_long_as_the_round_length_it_names():
    mpp = 7.3
    image = pictures.compose(np.zeros((600, 900, 3), np.uint8), title="t", metres_per_px=mpp, north=None)
    panel = image[:, 901:]
    bar = max(longest_run(row, (250, 250, 250)) for row in panel)
    expected = pictures.nice_length(min(900 / 5 * 1.5, panel.shape[1] - 2 * pictures.body_size(600)) * mpp)
    assert bar == round(expected / mpp) and expected in (1000, 2000)


@pytest.mark.parametrize("metres, nice", [(1800, 1000), (2000, 2000), (4999, 2000), (5000, 5000), (12, 10),
                                          (0.7, 0.5), (999.999, 500), (1e6, 1e6)])
def test_scale_bar_lengths_are_one_two_or_five_times_a_power_of_ten(metres, nice):
    assert pictures.nice_length(metres) == pytest.approx(nice)


def test_scale_bar_labels_and_a_bad_length():
    assert [pictures.length_text(m) for m in (500, 1000, 2000, 0.5, 20000)] == ["500 m", "1 km", "2 km", "0.5 m", "20 km"]
    with pytest.raises(ValueError, match="positive"):
        pictures.nice_length(0)


def test_metres_per_pixel_is_the_ground_distance():
    # a UTM 10 m pixel on the central meridian, where grid distances are 0.9996 of the ground's: 10.004 m
    utm = pictures.metres_per_pixel("EPSG:32630", from_origin(500000, 1000000, 10, 10), 0, 0)
    assert utm == pytest.approx(10 / 0.9996, abs=2e-4)
    # 0.0001 degree at the equator: 11.13 m; at 60 degrees north, half of that
    assert pictures.metres_per_pixel("EPSG:4326", from_origin(10, 0.0, 1e-4, 1e-4), 0, 0) == pytest.approx(11.132, abs=0.01)
    assert pictures.metres_per_pixel("EPSG:4326", from_origin(10, 60.0, 1e-4, 1e-4), 0, 0) == pytest.approx(5.58, abs=0.01)


@pytest.mark.parametrize("epsg, x, y", [(32630, 700000, 5000000), (32630, 300000, 5000000), (32630, 800000, 1000000),
                                        (32730, 700000, 5000000), (32730, 300000, 8000000)])
def test_the_grid_convergence_agrees_with_pyproj(epsg, x, y):
    from pyproj import Proj, Transformer

    lon, lat = Transformer.from_crs(f"EPSG:{epsg}", "EPSG:4326", always_xy=True).transform(x, y)
    expected = Proj(f"EPSG:{epsg}").get_factors(lon, lat).meridian_convergence
    got = pictures.grid_convergence(f"EPSG:{epsg}", x, y)
    assert got == pytest.approx(expected, abs=0.01) and abs(got) > 0.3
    east, north = x > 500000, epsg == 32630
    assert (got > 0) == (east == north)  # east of the central meridian in the north: grid north east of true north
    # a north-up scene there: the arrow turns the other way
    assert pictures.north_angle(f"EPSG:{epsg}", from_origin(x, y, 10, 10), 0, 0) == pytest.approx(-got, abs=1e-6)


def test_north_is_straight_up_on_a_central_meridian_and_on_a_north_up_lon_lat_grid():
    assert pictures.grid_convergence("EPSG:32630", 500000, 5000000) == pytest.approx(0, abs=1e-6)
    assert pictures.north_angle("EPSG:4326", from_origin(20, 50, 1e-4, 1e-4), 500, 500) == pytest.approx(0, abs=1e-6)
    # a grid turned a quarter clockwise (image up = map east): north is a quarter turn anticlockwise of up
    turned = rasterio.Affine(0.0, -10.0, 500000.0, 10.0, 0.0, 5000000.0)  # col -> +y (north), row -> -x (west)
    angle = pictures.north_angle("EPSG:32630", turned, 0, 0)
    assert angle == pytest.approx(-90, abs=1e-3) or angle == pytest.approx(90, abs=1e-3)
    col_dir = (turned.a, turned.d)  # a column step goes north: north points to the image's right
    assert (angle > 0) == (col_dir[1] > 0)


def test_the_north_arrow_points_where_north_is():
    # the "N" sits beyond the arrow's tip: above it when north is up, right of it when north is a quarter turn clockwise
    def arrow_and_n(north):
        panel = pictures.compose(np.zeros((300, 400, 3), np.uint8), north=north, metres_per_px=None)[:, 401:]
        arrow = np.nonzero(np.all(panel == (250, 250, 250), axis=-1))
        drawn = (panel.mean(axis=-1) > 100) & ~np.all(panel == (250, 250, 250), axis=-1)
        letter = np.nonzero(drawn & ~np.all(panel == (120, 124, 130), axis=-1))  # the text, not the arrow's shaded half
        assert len(arrow[0]) > 50 and len(letter[0]) > 3
        return arrow, letter

    (ay, ax), (ny, nx) = arrow_and_n(0.0)
    assert ny.max() < ay.min() and ax.min() < nx.mean() < ax.max()
    assert ay.max() - ay.min() > 1.4 * (ax.max() - ax.min())  # long along north, narrow across it
    (ay, ax), (ny, nx) = arrow_and_n(90.0)
    assert nx.min() > ax.max() and ay.min() < ny.mean() < ay.max()
    (ay, ax), (ny, nx) = arrow_and_n(-90.0)
    assert nx.max() < ax.min()


# --- chips ---------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    folder = tmp_path_factory.mktemp("chips")
    site = (150, 100, 170, 120)  # 20 x 20 px
    write_scene(folder / "before.tif", SPEC, Truth.of([], []))
    write_scene(folder / "after.tif", SPEC, Truth.of([site], [1]))
    transform = from_origin(*SPEC.origin, SPEC.pixel_size, SPEC.pixel_size)
    (x0, y1), (x1, y0) = transform * site[:2], transform * site[2:]
    return folder, site, (x0, y0, x1, y1), f"EPSG:{SPEC.epsg}"


def red_clusters(image: np.ndarray, colour) -> list[tuple[int, int, int, int]]:
    """Bounding boxes (x0, y0, x1, y1 inclusive) of the ``colour`` pixels, split at empty columns."""
    hit = np.all(image == colour, axis=-1)
    cols = np.nonzero(hit.any(axis=0))[0]
    groups = np.split(cols, np.nonzero(np.diff(cols) > 1)[0] + 1)
    out = []
    for g in groups:
        rows = np.nonzero(hit[:, g].any(axis=1))[0]
        out.append((g.min(), rows.min(), g.max(), rows.max()))
    return out


def test_a_chip_shows_before_and_after_side_by_side_with_the_site_outlined(pair, tmp_path):
    folder, site, box, crs = pair
    after = ChipSource(folder / "after.tif", BANDS, None, "2026-11-27")
    before = ChipSource(folder / "before.tif", BANDS, None, "2026-10-01")
    colour = (255, 40, 40)
    both = read_rgb(write_chip(tmp_path / "both.png", box, crs, after=after, before=before, title="site 1", size=160))
    one = read_rgb(write_chip(tmp_path / "one.png", box, crs, after=after, size=160))
    assert both.shape[1] > 2 * 160 and 160 < one.shape[1] < 2 * 160
    # the window: the 20 px site grown by 1.5 x 20 px each side = 80 px, shown at 160 px: the site is 40 px at (60, 60)
    panel = read_panel(after, box, crs, size=160)
    assert panel.site == pytest.approx((60, 60, 100, 100))
    assert panel.image[80, 80].mean() > 200 and panel.image[10, 10].mean() < panel.image[80, 80].mean()  # the bright site
    outlines = red_clusters(both, colour)
    assert len(outlines) == 2 and len(red_clusters(one, colour)) == 1
    for x0, y0, x1, y1 in outlines:
        assert (x1 - x0 + 1, y1 - y0 + 1) == (44, 44)  # 2 px just outside the 40 px site
    assert outlines[1][0] - outlines[0][0] == 160 + 12  # the same place in each panel
    (x0, y0, x1, y1), = red_clusters(one, colour)
    inside = one[y0 + 2 : y1 - 1, x0 + 2 : x1 - 1]
    assert not np.all(inside == colour, axis=-1).any()  # the site itself is not painted over


def test_a_box_given_in_another_crs_lands_on_the_same_site(pair):
    from rasterio.warp import transform_bounds

    folder, site, box, crs = pair
    after = ChipSource(folder / "after.tif", BANDS, None, "after")
    lonlat = transform_bounds(crs, "EPSG:4326", *box)
    a = read_panel(after, box, crs, size=160)
    b = read_panel(after, lonlat, "EPSG:4326", size=160)
    assert np.allclose(a.site, b.site, atol=2.0)


def test_a_site_at_the_edge_of_the_raster_still_gets_a_chip(pair, tmp_path):
    folder, _, _, crs = pair
    transform = from_origin(*SPEC.origin, SPEC.pixel_size, SPEC.pixel_size)
    (x0, y1), (x1, y0) = transform * (W - 10, 5), transform * (W + 10, 25)  # half outside on the right
    after = ChipSource(folder / "after.tif", BANDS, None, "after")
    panel = read_panel(after, (x0, y0, x1, y1), crs, size=128)
    assert panel.image.shape == (128, 128, 3)
    assert np.all(panel.image[:, -20:] == 0) and panel.image[:, :20].mean() > 10  # black beyond the raster only
    path = write_chip(tmp_path / "edge.png", (x0, y0, x1, y1), crs, after=after, size=128)
    assert len(red_clusters(read_rgb(path), (255, 40, 40))) == 1


def test_a_chip_shades_masked_cells_and_refuses_a_box_that_is_not_one(pair, tmp_path):
    folder, site, box, crs = pair
    after = ChipSource(folder / "after.tif", BANDS, None, "after")
    cells = np.zeros((H // 2, W // 2), bool)
    cells[:, : (site[0] - 20) // 2] = True  # everything left of 20 px before the site
    plain = read_panel(after, box, crs, size=160)
    shaded = read_panel(after, box, crs, size=160, masked=QualityMask(cells, 2, W, H, "test"))
    assert np.array_equal(shaded.image[:, 100:], plain.image[:, 100:])
    assert not np.array_equal(shaded.image[:, :30], plain.image[:, :30])
    with pytest.raises(ChipError, match="xmin < xmax"):
        write_chip(tmp_path / "x.png", (box[2], box[1], box[0], box[3]), crs, after=after)
    with pytest.raises(ChipError, match="cannot cut a chip"):
        write_chip(tmp_path / "x.png", box, crs, after=ChipSource(folder / "missing.tif", BANDS, None, "x"))
    with pytest.raises(ChipError, match=r"has bands 1\.\.4, a chip asked for \(5, 2, 1\)"):
        write_chip(tmp_path / "x.png", box, crs, after=ChipSource(folder / "after.tif", (5, 2, 1), None, "x"))
    assert not (tmp_path / "x.png").exists()


def test_save_png_writes_a_whole_png_and_refuses_other_arrays(tmp_path):
    image = np.random.default_rng(1).integers(0, 256, (30, 40, 3)).astype(np.uint8)
    path = pictures.save_png(tmp_path / "a.png", image)
    assert np.array_equal(read_rgb(path), image) and sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]
    with pytest.raises(ValueError, match="uint8"):
        pictures.save_png(tmp_path / "b.png", image.astype(np.float32))
    assert (pictures.body_size(100), pictures.body_size(800), pictures.body_size(4000)) == (12, 16, 20)  # legible, not huge


def test_a_heatmap_quicklook_keeps_its_map_and_explains_the_ramp_beside_it(scene, tmp_path):
    from minescan.results.quicklook import ramp_colour, write_heatmap_quicklook

    path, _ = scene
    probability = np.zeros((H // 16, W // 16))
    probability[2:6, 4:10] = 1.0
    png = write_heatmap_quicklook(tmp_path / "h.png", path, probability, 16, bands=BANDS, nodata=None, max_size=1024,
                                  threshold=0.5, class_name="illegal mining",
                                  decorations=Decorations(date="2026-11-27", model="classifier.onnx"))
    image = read_rgb(png)
    assert image.shape[0] >= H and image.shape[1] > W + 150
    r, g, b = image[4 * 16, 7 * 16]  # inside the probable area: deep red
    assert r > 150 and r > b + 60
    panel = panel_of(image)
    assert np.all(panel == ramp_colour(1.0), axis=-1).any() and np.all(panel == ramp_colour(0.1), axis=-1).any()
