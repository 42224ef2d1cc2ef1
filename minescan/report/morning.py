"""The run report: a page a person reads in the morning.

Written at the end of every detector run (also an interrupted one, for the
scenes done) into the run folder:

* ``report.md`` and ``report.html`` (the same text; the HTML is the Markdown
  rendered by markdown-it-py, a maintained CommonMark parser, so the two never
  disagree);
* with a baseline (``scan --baseline RUN_DIR``): ``changes.gpkg``, every site of
  today's scenes matched against the baseline run's (:mod:`minescan.change`:
  new, gone, grown, shrunk, unchanged, unknown), and the quicklooks redrawn
  with the new sites ringed;
* ``chips/site-NNN.png``: before | after image chips of the sites the report
  lists first (at most :data:`~minescan.defaults.Defaults.report_chips`).

Order of the report: new sites outside every concession first (the alerts),
then other new sites, grown, shrunk, unknown (hidden by clouds or no data at
one date: never "gone"), gone; unchanged sites are counted, not listed.
Without a baseline, detections outside every concession come first.  Sites of
the baseline outside today's scenes are left out: today says nothing of them.
"""

from __future__ import annotations

import html
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from minescan.report.baseline import Baseline
from minescan.results.atomic import write_atomically

REPORT_MARKDOWN = "report.md"
REPORT_HTML = "report.html"
CHANGES_FILE = "changes.gpkg"
CHIPS_FOLDER = "chips"
OUTSIDE_TODAY = "outside the new scenes"  # compare's reason for a baseline site today's scenes do not cover


@dataclass(frozen=True)
class DoneScene:
    """A scene of today's run with a detector's result: what the report reads back."""

    product_id: str
    result: Path
    quicklook: Path | None
    date: str | None
    dataset: str | None
    bands: tuple[int, ...] | None
    nodata: float | None
    clear_share: float | None
    detections: dict[str, int]
    masked_flagged: int


@dataclass(frozen=True)
class Site:
    """One line of the report: a site (a change, or a detection without a baseline) with where to look at it."""

    kind: str  # new, gone, grown, shrunk, unchanged, unknown; "detection" without a baseline
    reason: str
    class_label: str
    score: float | None
    area_m2: float | None
    old_area_m2: float | None
    concession: str | None
    inside: float  # NaN: no concessions known
    lon: float
    lat: float
    box: tuple[float, float, float, float]  # map coordinates of ``crs``
    crs: Any
    scene: str | None  # today's scene showing it (None: only the baseline saw it)

    @property
    def outside(self) -> bool:
        return not math.isnan(self.inside) and self.inside <= 0


@dataclass(frozen=True)
class Report:
    """What :func:`write_report` wrote and found."""

    markdown: Path
    html: Path
    changes: Path | None
    counts: dict[str, int]
    alerts: int  # new sites outside every concession (without a baseline: detections outside)
    chips: int


def done_scenes(summary: Any) -> list[DoneScene]:
    """Today's done scenes with a detector's result (a classifier's heatmap holds no sites)."""
    scenes = []
    for s in summary.scenes:
        o = s.outcome
        if s.status != "done" or o is None or Path(o.result).suffix.lower() in (".tif", ".tiff"):
            continue
        scenes.append(DoneScene(s.product_id, Path(o.result), Path(o.quicklook) if o.quicklook else None, o.date, o.dataset,
                                tuple(o.bands) if o.bands else None, o.nodata, o.clear_share, dict(o.detections),
                                o.masked_flagged))
    return scenes


def _sites_from_changes(changes: Any, scenes: Sequence[DoneScene]) -> list[Site]:
    lonlat = changes.lonlat()
    sites = []
    for change, (lon, lat) in zip(changes.changes, lonlat):
        if change.change == "unknown" and change.reason == OUTSIDE_TODAY:
            continue
        scene = changes.new.scene[change.new_members[0]] if change.new_members and changes.new is not None else None
        sites.append(Site(change.change, change.reason or "", change.class_label or change.old_class_label or "",
                          change.score if change.score is not None else change.old_score, change.area_m2,
                          change.old_area_m2, change.concession, change.inside, float(lon), float(lat),
                          tuple(change.geometry.bounds), changes.crs, scene))
    return sites


def _sites_from_results(scenes: Sequence[DoneScene]) -> list[Site]:
    """Without a baseline: each detection is a site (kind ``detection``), outside concessions first, best first."""
    from minescan.change.compare import read_sites

    sites: list[Site] = []
    for scene in scenes:
        found, _, crs = read_sites([scene.result])
        if not len(found):
            continue
        import shapely
        from pyproj import CRS, Transformer

        centres = shapely.get_coordinates(shapely.centroid(found.geometries))
        lon, lat = Transformer.from_crs(crs, CRS.from_epsg(4326), always_xy=True).transform(centres[:, 0], centres[:, 1])
        areas = shapely.area(found.geometries)
        for i in range(len(found)):
            sites.append(Site("detection", "", str(found.class_label[i]), float(found.score[i]), float(areas[i]), None,
                              found.concession[i], float(found.inside[i]), round(float(lon[i]), 6), round(float(lat[i]), 6),
                              tuple(found.geometries[i].bounds), crs, scene.product_id))
    return sorted(sites, key=lambda s: (not s.outside, -(s.score or 0)))


ORDER = ("new", "grown", "shrunk", "unknown", "gone", "unchanged")


def _ordered(sites: list[Site]) -> list[Site]:
    """Alerts (new, outside concessions) first, then the other kinds in :data:`ORDER`, largest first within each."""
    def key(site: Site) -> tuple:
        rank = ORDER.index(site.kind) if site.kind in ORDER else len(ORDER)
        return (not (site.kind == "new" and site.outside), rank, -(site.area_m2 or site.old_area_m2 or 0))

    return sorted(sites, key=key)


def _hectares(area: float | None) -> str:
    return "-" if area is None or (isinstance(area, float) and math.isnan(area)) else f"{area / 1e4:.2f} ha"


def _where(site: Site) -> str:
    return f"{abs(site.lat):.5f}° {'N' if site.lat >= 0 else 'S'}, {abs(site.lon):.5f}° {'E' if site.lon >= 0 else 'W'}"


def _concession(site: Site) -> str:
    if math.isnan(site.inside):
        return "-"
    if site.inside <= 0:
        return "**outside every concession**"
    return f"{site.concession} ({site.inside:.0%} inside)"


def _chips(out_dir: Path, sites: Sequence[Site], scenes: Sequence[DoneScene], baseline: Baseline | None,
           limit: int) -> dict[int, str]:
    """Chips of the first ``limit`` listed sites (index -> relative path): today's scene that shows the site (the one
    its detection came from, else the one whose footprint holds it) and the baseline's; a chip that cannot be made is
    left out (the report still lists its site).  Without a baseline only detections outside every concession get one
    (a plain run's hundreds of detections would cost a windowed read each for nothing asked)."""
    from minescan.errors import MinescanError
    from minescan.results.chips import write_chip

    folder = out_dir / CHIPS_FOLDER
    made: dict[int, str] = {}
    today = _footprints([(s.product_id, s.result, s.dataset, s.bands, s.nodata, s.date or "today") for s in scenes])
    befores = _footprints([(s.product_id, s.result, s.dataset, s.bands, s.nodata, s.date or "before")
                           for s in baseline.scenes]) if baseline is not None else []
    for index, site in enumerate(sites):
        if len(made) >= limit:
            break
        if baseline is None and not site.outside:
            continue  # without a baseline only the alerts (detections outside every concession) are chipped
        after = next((source for name, _, _, source in today if name == site.scene), None) or _holding(site, today)
        before = _holding(site, befores)
        if after is None and before is None:
            continue
        name = f"site-{index + 1:03d}.png"
        title = f"{index + 1}. {site.kind} {site.class_label} {_hectares(site.area_m2 or site.old_area_m2)}"
        try:
            folder.mkdir(exist_ok=True)
            if after is not None:
                write_chip(folder / name, site.box, site.crs, after=after, before=before, title=title)
            else:
                write_chip(folder / name, site.box, site.crs, after=before, title=title)
        except (MinescanError, OSError):
            continue
        made[index] = f"{CHIPS_FOLDER}/{name}"
    return made


def _footprints(scenes: Sequence[tuple]) -> list[tuple[str, Any, Any, Any]]:
    """(product id, footprint polygon, its CRS, ChipSource) of each scene that can still be read; ``scenes`` are
    (product id, result file, dataset, bands, nodata, label)."""
    import pyogrio
    import shapely
    from pyproj import CRS

    from minescan.results.chips import ChipSource
    from minescan.results.read import scan_metadata

    found = []
    for product_id, result, dataset, bands, nodata, label in scenes:
        if not dataset or not bands or not Path(str(dataset).removeprefix("/vsizip/")).exists():
            continue
        meta = scan_metadata(result) or {}
        if not meta.get("footprint"):
            continue
        try:
            crs = CRS.from_user_input(pyogrio.read_info(str(result), layer=0)["crs"])
        except Exception:  # noqa: BLE001 - an unreadable result gives no chip, nothing more
            continue
        found.append((product_id, shapely.from_wkt(meta["footprint"]), crs, ChipSource(dataset, tuple(bands), nodata, label)))
    return found


def _holding(site: Site, footprints: list[tuple[str, Any, Any, Any]]) -> Any:
    """The ChipSource of the first scene whose footprint holds the site's centre (None: none does)."""
    import shapely
    from pyproj import Transformer

    x, y = (site.box[0] + site.box[2]) / 2, (site.box[1] + site.box[3]) / 2
    for _, polygon, crs, source in footprints:
        px, py = Transformer.from_crs(site.crs, crs, always_xy=True).transform(x, y)
        if shapely.contains_xy(polygon, px, py):
            return source
    return None


def _redraw_quicklooks(scenes: Sequence[DoneScene], sites: Sequence[Site], size: int, model: str,
                       baseline: Baseline) -> None:
    """Each scene's quicklook again, with its new sites ringed and its masked areas shaded (from its result file)."""
    from minescan.errors import MinescanError
    from minescan.results.quicklook import Decorations, write_quicklook

    since = ", ".join(baseline.dates) or "the baseline"
    for scene in scenes:
        if scene.quicklook is None or scene.dataset is None:
            continue
        try:
            detections, labels, flagged, mask, transform, crs = _read_back(scene)
            new = [s for s in sites if s.kind == "new" and s.scene == scene.product_id]
            highlight = _pixel_boxes([s.box for s in new], new[0].crs, crs, transform) if new else None
            write_quicklook(scene.quicklook, scene.dataset, detections, bands=scene.bands, nodata=scene.nodata, max_size=size,
                            decorations=Decorations(title=scene.product_id, date=scene.date, model=model, labels=labels,
                                                    masked=mask, flagged=flagged, highlight=highlight,
                                                    highlight_label=f"new since {since}"))
        except (MinescanError, OSError):
            continue  # the scan's own quicklook stays


def _read_back(scene: DoneScene) -> tuple[Any, dict[int, str], np.ndarray, Any, Any, Any]:
    """A result file's detections (scene px), labels, flags, and its masked areas as a QualityMask over the scene."""
    import pyogrio
    import rasterio

    from minescan.model.detections import SceneDetections
    from minescan.quality.mask import mask_from_polygons

    meta, _, _, fields = pyogrio.raw.read(str(scene.result), layer=0)
    names = list(meta["fields"])
    column = dict(zip(names, fields))
    boxes = np.stack([column[k].astype(np.float64) for k in ("col_min", "row_min", "col_max", "row_max")], axis=1).reshape(-1, 4)
    classes = column["class_id"].astype(np.int32)
    scores = column["score"].astype(np.float32)
    labels = {int(c): str(n) for c, n in zip(classes, column.get("class_label", classes))}
    flagged = column["flagged"].astype(bool) if "flagged" in column else np.zeros(len(classes), bool)
    with rasterio.open(scene.dataset) as src:
        transform, crs, width, height = src.transform, src.crs, src.width, src.height
    mask = None
    layers = [name for name, _ in pyogrio.list_layers(str(scene.result))]
    if "unobserved" in layers:
        _, _, wkb, extra = pyogrio.raw.read(str(scene.result), layer="unobserved")
        import shapely

        masked = shapely.from_wkb(wkb)[np.asarray(extra[0]) == "masked"] if len(wkb) else np.array([], dtype=object)
        if len(masked):
            mask = mask_from_polygons(masked, width, height, transform, f"{scene.product_id}: masked areas")
    return SceneDetections(boxes, scores, classes), labels, flagged, mask, transform, crs


def _pixel_boxes(boxes: Sequence[tuple[float, ...]], crs: Any, scene_crs: Any, transform: Any) -> np.ndarray:
    """Map boxes in ``crs`` as scene pixel boxes (the extent of their corners) of a scene in ``scene_crs``."""
    from pyproj import CRS, Transformer

    to_scene = Transformer.from_crs(CRS.from_user_input(crs), CRS.from_user_input(scene_crs), always_xy=True)
    inverse = ~transform
    out = []
    for x0, y0, x1, y1 in boxes:
        xs, ys = to_scene.transform([x0, x1, x1, x0], [y0, y0, y1, y1])
        cols, rows = zip(*(inverse * (x, y) for x, y in zip(xs, ys)))
        out.append((min(cols), min(rows), max(cols), max(rows)))
    return np.array(out, np.float64).reshape(-1, 4)


def _markdown(summary: Any, scenes: Sequence[DoneScene], sites: Sequence[Site], baseline: Baseline | None,
              chips: dict[int, str], counts: dict[str, int], changes: Path | None) -> str:
    dates = sorted({s.date for s in scenes if s.date})
    lines = [f"# minescan report: {', '.join(dates) or 'scenes of unknown date'}", ""]
    lines.append(f"Model `{Path(summary.model).name}`, {len(scenes)} scene(s) scanned"
                 + (f", compared with the run in `{baseline.folder}` ({', '.join(baseline.dates) or 'dates unknown'})"
                    if baseline else "") + ".")
    if summary.interrupted:
        lines.append("**The run was interrupted**: this report covers the scenes done; the same command resumes it.")
    lines.append("")
    alerts = [s for s in sites if s.outside and s.kind in ("new", "detection")]
    if baseline is not None:
        lines += ["| new | outside concessions | grown | shrunk | unknown (clouds, no data) | gone | unchanged |",
                  "|---|---|---|---|---|---|---|",
                  f"| {counts.get('new', 0)} | {len(alerts)} | {counts.get('grown', 0)} | {counts.get('shrunk', 0)} | "
                  f"{counts.get('unknown', 0)} | {counts.get('gone', 0)} | {counts.get('unchanged', 0)} |", ""]
        if changes is not None:
            lines += [f"Every site with its change: `{changes.name}` (open it in QGIS; field `change`).", ""]
    else:
        total = sum(sum(s.detections.values()) for s in scenes)
        lines += [f"{total} detection(s); no baseline given (`--baseline RUN_DIR` says what changed since an earlier run)"
                  + (f", {len(alerts)} outside every concession." if any(not math.isnan(s.inside) for s in sites) else "."), ""]
    hidden = [s for s in scenes if s.clear_share is not None and s.clear_share < 0.999]
    if hidden:
        lines += ["Clouds: " + "; ".join(f"{s.product_id} {s.clear_share:.0%} clear" for s in hidden)
                  + ". Sites under clouds are `unknown`, never `gone`; detections mostly under clouds are flagged.", ""]

    def section(title: str, chosen: list[tuple[int, Site]], detail: bool) -> None:
        if not chosen:
            return
        lines.extend([f"## {title} ({len(chosen)})", ""])
        if detail:
            for index, site in chosen:
                lines.append(f"### {index + 1}. {site.class_label}, score {site.score:.2f}, {_hectares(site.area_m2)}"
                             if site.score is not None else f"### {index + 1}. {site.class_label}, {_hectares(site.area_m2)}")
                lines.append("")
                lines.append(f"At {_where(site)} (lat {site.lat:.6f}, lon {site.lon:.6f}), scene `{site.scene}`; "
                             f"concession: {_concession(site)}.")
                if index in chips:
                    lines.extend(["", f"![site {index + 1}]({chips[index]})"])
                lines.append("")
        else:
            lines.extend(["| # | class | change | area | before | score | where | concession | why | chip |",
                          "|---|---|---|---|---|---|---|---|---|---|"])
            for index, site in chosen:
                chip = f"[chip]({chips[index]})" if index in chips else ""
                score = "-" if site.score is None else f"{site.score:.2f}"
                lines.append(f"| {index + 1} | {site.class_label} | {site.kind} | {_hectares(site.area_m2)} | "
                             f"{_hectares(site.old_area_m2)} | {score} | {site.lat:.5f}, {site.lon:.5f} | {_concession(site)} | "
                             f"{site.reason or ''} | {chip} |")
            lines.append("")

    numbered = list(enumerate(sites))
    if baseline is not None:
        section("New sites outside every concession", [(i, s) for i, s in numbered if s.kind == "new" and s.outside], True)
        section("Other new sites", [(i, s) for i, s in numbered if s.kind == "new" and not s.outside], True)
        for kind, title in (("grown", "Grown"), ("shrunk", "Shrunk"), ("unknown", "Unknown: hidden at one date"),
                            ("gone", "Gone")):
            section(title, [(i, s) for i, s in numbered if s.kind == kind], False)
    else:
        section("Detections outside every concession", [(i, s) for i, s in numbered if s.outside], True)
        section("Other detections", [(i, s) for i, s in numbered if not s.outside][:200], False)
    lines += ["## Scenes", "", "| scene | date | clear | detections | flagged (clouds) | quicklook |", "|---|---|---|---|---|---|"]
    for s in scenes:
        clear = "-" if s.clear_share is None else f"{s.clear_share:.0%}"
        found = ", ".join(f"{k} {v}" for k, v in sorted(s.detections.items())) or "none"
        look = f"[{s.quicklook.name}]({s.quicklook.name})" if s.quicklook else "-"
        lines.append(f"| {s.product_id} | {s.date or '-'} | {clear} | {found} | {s.masked_flagged} | {look} |")
    lines.append("")
    return "\n".join(lines)


_STYLE = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
          "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;font-size:14px}"
          "th{background:#f3f3f3}img{max-width:100%;border:1px solid #ddd}h3{margin-top:2em}")


def _html(markdown: str, title: str) -> str:
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark").enable("table").render(markdown)
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body>\n{body}</body></html>\n")


def write_report(out_dir: Path, summary: Any, baseline: Baseline | None, *, quicklook_size: int, chips: int,
                 rule: Any = None) -> Report | None:
    """Compare, list, chip and write the run's report (see the module docstring); None when no scene has a detector's result."""
    from minescan.change.match import ChangeRule

    scenes = done_scenes(summary)
    if not scenes:
        return None
    changes_path = None
    counts: dict[str, int] = {}
    if baseline is not None:
        from minescan.change.compare import compare_results

        changes = compare_results(baseline.results, [s.result for s in scenes], rule or ChangeRule())
        sites = _ordered(_sites_from_changes(changes, scenes))
        counts = dict(Counter(s.kind for s in sites))
        changes_path = out_dir / CHANGES_FILE
        _write_changes(changes, changes_path)
        if quicklook_size:
            _redraw_quicklooks(scenes, sites, quicklook_size, Path(summary.model).name, baseline)
    else:
        sites = _sites_from_results(scenes)
    listed = [s for s in sites if s.kind != "unchanged"]
    made = _chips(out_dir, listed, scenes, baseline, chips)
    text = _markdown(summary, scenes, listed, baseline, made, counts, changes_path)
    markdown, page = out_dir / REPORT_MARKDOWN, out_dir / REPORT_HTML
    write_atomically(markdown, text.encode())
    write_atomically(page, _html(text, "minescan report").encode())
    alerts = sum(1 for s in listed if s.outside and s.kind in ("new", "detection"))
    return Report(markdown, page, changes_path, counts, alerts, len(made))


def _write_changes(changes: Any, path: Path) -> None:
    """The changes without the baseline's sites outside today's scenes."""
    import dataclasses

    kept = tuple(c for c in changes.changes if not (c.change == "unknown" and c.reason == OUTSIDE_TODAY))
    dataclasses.replace(changes, changes=kept).write(path)
