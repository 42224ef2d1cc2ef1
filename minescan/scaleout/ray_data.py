"""A Ray Data building block: minescan's detector as a ``map_batches`` stage in your own pipeline.

::

    import ray
    from ray.data import ActorPoolStrategy
    from minescan.scaleout.ray_data import DetectTiles

    ds = ray.data.from_items([{"image": tile, "tile_id": "a"}, ...])  # tile: uint8 [H, W, 3] RGB
    out = ds.map_batches(DetectTiles, fn_constructor_kwargs={"model": "model.onnx", "score_threshold": 0.5},
                         batch_size=8, compute=ActorPoolStrategy(size=2), batch_format="numpy")
    for row in out.take_all():
        row["tile_id"], row["boxes"], row["scores"], row["classes"], row["labels"]

:class:`DetectTiles` loads the model once per actor
(:func:`minescan.engine.load_detector`, the loader every scan uses) and runs
each batch through ``detector.detect`` as a scan does: the same boxes,
scores and classes, tile by tile.  It does not stitch: overlapping tiles
report an object each, in its own tile's pixels.

To tile whole scenes the way a scan does, :func:`tile_rows` lists the
windows of a scene's tile grid (:class:`~minescan.raster.grid.TileGrid`) and
:class:`ReadTiles` reads and renders them with the scene's scan plan::

    rows = tile_rows("scene.tif") + tile_rows("other.SAFE")      # dicts: scene, row, col, col_off, ...
    ds = ray.data.from_items(rows)                              # or tile_dataset([...])
    ds = ds.map_batches(ReadTiles, fn_constructor_kwargs={"model": "model.onnx"}, batch_size=8,
                        compute=ActorPoolStrategy(size=2), batch_format="numpy")
    out = ds.map_batches(DetectTiles, fn_constructor_kwargs={"model": "model.onnx"}, ...)

Ray itself is optional (``pip install 'minescan[ray]'``) and imported only
inside functions; :class:`DetectTiles` and :class:`ReadTiles` are plain
callables on dicts of numpy arrays and work without Ray too.

How the ragged columns come back (ray 2.60, checked by tests/test_ray_data.py):
``take()``/``take_all()`` give each row's ``boxes``/``scores``/``classes`` as
numpy arrays and ``labels`` as a list of str; ``to_pandas()`` gives numpy
arrays in object columns (``labels`` a list or a numpy array of str,
depending on Arrow's conversion); ``iter_batches(batch_format="numpy")`` gives
object arrays of per-row arrays; ``write_parquet`` stores them as Ray's
tensor extension types and ``list<string>``.  A block whose rows all have
the same number of detections is stored as a fixed-shape tensor (Ray unifies
it with the variable-shaped ones); ``ds.schema()`` shows only the first
block's type.
"""

from __future__ import annotations

import os
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from minescan.defaults import DEFAULTS
from minescan.engine.detector import DetectorInputError
from minescan.errors import MinescanError

DETECTION_COLUMNS = ("boxes", "scores", "classes", "labels")
"""The columns :class:`DetectTiles` adds for a detector."""
CLASSIFIER_COLUMNS = ("probabilities",)
"""The column :class:`DetectTiles` adds for a tile classifier."""
TILE_COLUMNS = ("scene", "row", "col", "col_off", "row_off", "width", "height")
"""The columns of a tile descriptor (:func:`tile_rows`), all :class:`ReadTiles` needs."""
RAY_INSTALL = "pip install 'minescan[ray]'"


class RayDataError(MinescanError):
    """The Ray Data building block cannot run as asked (Ray missing, a bad setting)."""


class TileBatchError(RayDataError, DetectorInputError):
    """A batch handed to :class:`DetectTiles` or :class:`ReadTiles` that does not fit (a column, dtype or size)."""


def import_ray() -> Any:
    """``ray`` with Ray Data, or :class:`RayDataError` saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401  (needs pandas and pyarrow)
    except ImportError as exc:
        raise RayDataError(f"Ray Data is not installed ({exc}): {RAY_INSTALL}") from exc
    return ray


def _ray_cpus() -> int | None:
    """The CPUs Ray assigned to this worker (the ``num_cpus`` of ``map_batches``), None outside Ray."""
    try:
        import ray
    except ImportError:
        return None
    if not ray.is_initialized():
        return None
    try:
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    except Exception:  # the driver, or an older Ray without assigned resources: the detector's own default
        return None
    return max(1, int(cpus)) if cpus else None


def _column(batch: Mapping[str, Any], name: str, what: str) -> Any:
    if name not in batch:
        raise TileBatchError(f"the batch has no column {name!r} ({what}); its columns: {', '.join(map(str, batch)) or 'none'}")
    return batch[name]


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} {list(value.shape)}"
    return type(value).__name__


def stack_tiles(column: Any, name: str = "image") -> np.ndarray:
    """The image column of a numpy batch as one uint8 [N, H, W, 3] array, or :class:`TileBatchError` naming it.

    Accepts the array itself (what Ray gives for images of one shape) or an
    object array of uint8 [H, W, 3] arrays (what it gives for variable-shaped
    ones), which must then all be the same size.
    """
    if isinstance(column, np.ndarray) and column.dtype != object:
        if column.dtype != np.uint8 or column.ndim != 4 or column.shape[3] != 3:
            channels = f" ({column.shape[-1]} channels)" if column.ndim == 4 and column.shape[3] != 3 else ""
            raise TileBatchError(f"column {name!r} is {_describe(column)}{channels}; tiles must be uint8 [N, H, W, 3] RGB")
        return column
    if not isinstance(column, (np.ndarray, list, tuple)):
        raise TileBatchError(f"column {name!r} is a {type(column).__name__}; tiles must be uint8 [N, H, W, 3] RGB "
                             f"(use batch_format='numpy')")
    tiles = list(column)
    for index, tile in enumerate(tiles):
        if not isinstance(tile, np.ndarray) or tile.dtype != np.uint8 or tile.ndim != 3 or tile.shape[2] != 3:
            raise TileBatchError(f"column {name!r} row {index} is {_describe(tile)}; a tile must be uint8 [H, W, 3] RGB")
        if tile.shape != tiles[0].shape:
            raise TileBatchError(f"column {name!r} row {index} is {tile.shape[0]}x{tile.shape[1]} px, row 0 "
                                 f"{tiles[0].shape[0]}x{tiles[0].shape[1]} px; one batch holds tiles of one size")
    if not tiles:
        return np.zeros((0, 0, 0, 3), np.uint8)
    return np.stack(tiles)


def _objects(values: list) -> np.ndarray:
    """An object array of one entry per row (numpy would otherwise stack equal-shaped rows)."""
    out = np.empty(len(values), dtype=object)
    for index, value in enumerate(values):
        out[index] = value
    return out


class DetectTiles:
    """A ``map_batches`` callable: the model's detections for each tile of a numpy batch.

    Construction (once per actor) loads ``model`` (an ONNX file in the
    detector contract, or a TensorRT engine) with
    :func:`minescan.engine.load_detector` on ``backend`` (default
    ``DEFAULTS.backend``); ``threads`` defaults to the CPUs Ray assigned the
    actor (``num_cpus`` of ``map_batches``), and each actor runs one call at
    a time.  ``score_threshold`` (default ``DEFAULTS.score_threshold``) keeps
    detections scoring at least that.

    Invariants of a call (:meth:`__call__`):

    * the batch's ``image_column`` holds uint8 RGB tiles [N, H, W, 3] (or an
      object array of uint8 [H, W, 3] arrays) of one size, the model's if it
      has a fixed size; anything else raises :class:`TileBatchError` naming
      the column and the value;
    * every other column comes back unchanged; ``image_column`` only with
      ``keep_images=True``;
    * a detector adds ``boxes`` (per row float64 [k, 4], tile pixels,
      pixel-corner ``x0, y0, x1, y1`` as
      :class:`~minescan.model.detections.TileDetections` has them),
      ``scores`` (float32 [k], >= ``score_threshold``), ``classes`` (int32
      [k], 1-based) and ``labels`` (a list of k str: the model's class names,
      the id as text where it names none), row i being exactly what
      ``detector.detect`` answers for tile i;
    * a tile classifier (task ``classifier``) adds ``probabilities`` (float32
      [N, C]; column j is class j + 1, named by :attr:`class_names`);
    * a column the call would add that is already in the batch raises
      :class:`TileBatchError` (nothing is overwritten).
    """

    def __init__(self, model: str | os.PathLike[str], *, backend: str = DEFAULTS.backend, threads: int | None = None,
                 score_threshold: float = DEFAULTS.score_threshold, image_column: str = "image",
                 keep_images: bool = False) -> None:
        from minescan.engine import load_detector

        if not 0 <= score_threshold <= 1:
            raise RayDataError(f"score_threshold {score_threshold!r} is out of range: must be in [0, 1]")
        self.model = Path(model)
        self.score_threshold = float(score_threshold)
        self.image_column = image_column
        self.keep_images = keep_images
        threads = threads or _ray_cpus()
        self.detector = load_detector(model, backend=backend, threads=threads, workers=1 if threads else None)
        self.task = getattr(self.detector, "task", "detector")
        self.labels: dict[int, str] = dict(self.detector.metadata.labels)
        self.columns = CLASSIFIER_COLUMNS if self.task == "classifier" else DETECTION_COLUMNS

    @property
    def class_names(self) -> list[str]:
        """The name of each class id 1..C of a classifier's ``probabilities`` (ids as text where unnamed)."""
        count = getattr(self.detector.signature, "classes", None) or max(self.labels, default=0)
        return [self.labels.get(i, str(i)) for i in range(1, count + 1)]

    def check(self, batch: Mapping[str, Any]) -> np.ndarray:
        """The batch's tiles as uint8 [N, H, W, 3], checked against the model; :class:`TileBatchError` if they do not fit."""
        tiles = stack_tiles(_column(batch, self.image_column, "uint8 [N, H, W, 3] RGB tiles; see image_column"),
                            self.image_column)
        taken = [c for c in self.columns if c in batch]
        if taken:
            raise TileBatchError(f"the batch already has a column {taken[0]!r}, which DetectTiles adds; rename it first")
        sig = self.detector.signature
        if len(tiles) and ((sig.height or tiles.shape[1]) != tiles.shape[1] or (sig.width or tiles.shape[2]) != tiles.shape[2]):
            raise TileBatchError(f"column {self.image_column!r} holds {tiles.shape[1]}x{tiles.shape[2]} px tiles, but "
                                 f"{self.model.name} takes {sig.height}x{sig.width} px")
        return tiles

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The batch's columns (less the images unless ``keep_images``) with the detections added (see the class)."""
        tiles = self.check(batch)
        out = {k: v for k, v in batch.items() if k != self.image_column or self.keep_images}
        results = self.detector.detect(tiles, self.score_threshold) if len(tiles) else []
        if self.task == "classifier":
            classes = len(results[0]) if results else len(self.class_names)
            out["probabilities"] = (np.stack(results).astype(np.float32, copy=False) if results
                                    else np.zeros((0, classes), np.float32))
            return out
        out["boxes"] = _objects([d.boxes for d in results])
        out["scores"] = _objects([d.scores for d in results])
        out["classes"] = _objects([d.classes for d in results])
        out["labels"] = _objects([[self.labels.get(int(c), str(int(c))) for c in d.classes] for d in results])
        return out


def tile_rows(scene: str | os.PathLike[str], *, tile: int | None = None, overlap: int | None = None) -> list[dict[str, Any]]:
    """One dict per tile of ``scene``'s grid (:class:`~minescan.raster.grid.TileGrid`), row-major: the rows of a dataset.

    ``scene`` is any input minescan scans (a raster, a ``.SAFE``, a STAC item,
    band files); it is stored spelled as the scan's journal spells it (local
    paths absolute), so readers on other processes find it.  ``tile`` and
    ``overlap`` default to ``DEFAULTS.tile`` and ``DEFAULTS.overlap``; give a
    fixed-size model's size as ``tile``.  Each dict holds ``scene``, ``row``,
    ``col`` (the tile's place in the grid), ``col_off``, ``row_off`` (its
    top-left scene pixel), ``width`` and ``height`` (the tile size; a tile
    of a scene smaller than a tile extends past it and is padded when read).
    """
    import rasterio

    from minescan.raster.grid import TileGrid
    from minescan.raster.sources.resolve import absolute_input, resolve

    text = absolute_input(os.fspath(scene), Path.cwd())
    with tempfile.TemporaryDirectory(prefix="minescan-tiles-") as folder:
        source = resolve(text, Path(folder))
        with rasterio.open(source.dataset) as src:
            width, height = src.width, src.height
    grid = TileGrid(width, height, tile or DEFAULTS.tile, DEFAULTS.overlap if overlap is None else overlap)
    return [{"scene": text, "row": t.row, "col": t.col, "col_off": t.col_off, "row_off": t.row_off,
             "width": t.width, "height": t.height} for t in grid]


def tile_dataset(scenes: Iterable[str | os.PathLike[str]], *, tile: int | None = None, overlap: int | None = None) -> Any:
    """A ``ray.data.Dataset`` of the :func:`tile_rows` of each scene (needs Ray: ``pip install 'minescan[ray]'``)."""
    ray = import_ray()
    rows = [row for scene in scenes for row in tile_rows(scene, tile=tile, overlap=overlap)]
    return ray.data.from_items(rows)


class ReadTiles:
    """A ``map_batches`` callable: the uint8 RGB tile of each tile descriptor (:func:`tile_rows`) of a numpy batch.

    Each scene is rendered as a scan of it with ``model`` renders it: the
    scene's scan plan (:meth:`minescan.Scanner.plan` with ``options``, any
    :class:`~minescan.scan.plan.ScanOptions` field such as ``bands``,
    ``nodata``, ``gain`` or ``stretch``) fixes its bands, nodata and
    radiometry, and a tile's pixels are the ones the scan's reader gives that
    tile.  The model is loaded once per actor (on the CPU, one thread: it is
    only read for its recipe); plans and open scenes are kept for the last
    ``cache`` scenes.

    Invariants of a call: the batch has the :data:`TILE_COLUMNS` (else
    :class:`TileBatchError` naming the missing one); every column comes
    back unchanged, and ``image`` (uint8 [N, H, W, 3], an object array of
    [H, W, 3] when the batch mixes tile sizes; pixels outside the scene and
    nodata pixels are 0) and ``empty`` (bool [N]: the tile is all nodata, a
    tile a scan skips) are added.
    """

    def __init__(self, model: str | os.PathLike[str], *, image_column: str = "image", cache: int = 4,
                 **options: Any) -> None:
        from minescan.scan.scanner import Scanner

        self.scanner = Scanner(model, backend="cpu", threads=1, workers=1, **options)
        self.image_column = image_column
        self.cache = max(1, cache)
        self._scenes: OrderedDict[str, tuple[Any, Any]] = OrderedDict()  # scene -> (plan, open Scene)

    def _scene(self, name: str) -> tuple[Any, Any]:
        if name in self._scenes:
            self._scenes.move_to_end(name)
            return self._scenes[name]
        plan = self.scanner.plan(name)
        opened = plan.open_scene()
        self._scenes[name] = (plan, opened)
        while len(self._scenes) > self.cache:
            _, (_, old) = self._scenes.popitem(last=False)
            old.close()
        return plan, opened

    def render(self, scene: str, row: int, col: int, col_off: int, row_off: int, width: int, height: int) -> tuple[np.ndarray, bool]:
        """One tile's uint8 RGB [height, width, 3] and whether it is all nodata."""
        from minescan.raster.grid import Tile

        plan, opened = self._scene(scene)
        if not (0 <= col_off < plan.width and 0 <= row_off < plan.height) or width < 1 or height < 1:
            raise TileBatchError(f"tile ({row}, {col}) at pixel ({col_off}, {row_off}) size {width}x{height} lies outside "
                                 f"{scene} ({plan.width} x {plan.height} px)")
        tile = Tile(row, col, col_off, row_off, width, height, min(width, plan.width - col_off),
                    min(height, plan.height - row_off), False, False, False, False)
        data = opened.read(tile)
        return plan.radiometry.apply(data.data, data.nodata), bool(data.nodata.all())

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The batch with ``image`` and ``empty`` added (see the class)."""
        columns = [np.asarray(_column(batch, name, "a tile descriptor from tile_rows")) for name in TILE_COLUMNS]
        if self.image_column in batch or "empty" in batch:
            taken = self.image_column if self.image_column in batch else "empty"
            raise TileBatchError(f"the batch already has a column {taken!r}, which ReadTiles adds; rename it first")
        images, empty = [], []
        for scene, *numbers in zip(*columns):
            try:
                values = [int(v) for v in numbers]
            except (TypeError, ValueError):
                raise TileBatchError(f"tile of {scene}: {dict(zip(TILE_COLUMNS[1:], numbers))} are not whole numbers") from None
            rgb, blank = self.render(str(scene), *values)
            images.append(rgb)
            empty.append(blank)
        out = dict(batch)
        same = len({i.shape for i in images}) <= 1
        out[self.image_column] = (np.stack(images) if images and same else
                                  _objects(images) if images else np.zeros((0, 0, 0, 3), np.uint8))
        out["empty"] = np.array(empty, bool)
        return out

    def __del__(self) -> None:
        for _, opened in getattr(self, "_scenes", {}).values():
            try:
                opened.close()
            except Exception:  # closing at interpreter exit: nothing to report to
                pass
