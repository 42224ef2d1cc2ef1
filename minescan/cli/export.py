"""The ``minescan export`` command: SavedModel -> verified ONNX, optionally TensorRT-ready, FP16 or INT8.

The source says what is made: a TF Object Detection API SavedModel becomes a
detector (:mod:`minescan.export.convert`); a Keras ``.keras`` file, or a
SavedModel whose ``serving_default`` returns one [batch, classes] tensor,
becomes a tile classifier (:mod:`minescan.export.keras_classifier`); an ONNX
file of either kind keeps its graph and gets its metadata completed.

TensorFlow is imported only when the command runs, so the rest of the command
line works without the ``export`` extra.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from minescan.cli.options import percentiles, recipe_options
from minescan.export.choices import DEFAULT_OPSET, PRECISIONS, PREPROCESSES, TARGETS
from minescan.export.errors import ExportError

VERIFY_SCENE_TILES = 24  # tiles --verify cuts from the --calibration scenes, beside 4 synthetic ones
VERIFY_SYNTHETIC_WINDOWS = 16  # a classifier's windows are small and cheap: more synthetic ones than a detector's 4
FP32_TAILS = (2, 4, 8, 16)  # INT8 fallback: quantizable ops nearest the outputs kept in FP32, tried in turn

if TYPE_CHECKING:
    from minescan.export.agreement import ClassifierPrecisionReport, PrecisionReport
    from minescan.export.verify import ParityReport, ProbabilityReport


def _overrides(args: argparse.Namespace) -> dict:
    """The recipe keys the command line sets explicitly."""
    recipe: dict = {}
    if args.bands:
        recipe["bands"] = list(args.bands)
    for key in ("gain", "offset", "scale"):
        if getattr(args, key) is not None:
            recipe[key] = getattr(args, key)
    if args.normalisation == "stretch":
        low, high = args.stretch or (2.0, 98.0)
        recipe["normalisation"] = {"kind": "stretch", "low": low, "high": high}
    elif args.normalisation == "standardize":
        mean, std = args.standardize or (110.0, 40.0)
        recipe["normalisation"] = {"kind": "standardize", "mean": mean, "std": std}
    elif args.normalisation == "gain":
        recipe["normalisation"] = {"kind": "gain"}
    return recipe


def _recipe(args: argparse.Namespace, recorded: dict | None = None) -> dict:
    """The recipe to record: the defaults, then what the model already records (an ONNX input), then the options."""
    from minescan.export.convert import DEFAULT_PREPROCESSING

    kept = {k: v for k, v in (recorded or {}).items() if v is not None}
    return {**DEFAULT_PREPROCESSING, **kept, **_overrides(args)}


def _recorded_recipe(path: str) -> dict:
    """The recipe an ONNX model already records (empty when it records none)."""
    import onnx

    from minescan.export.onnx_metadata import read_metadata

    if not Path(path).is_file():
        raise ExportError(f"{path}: no such ONNX file")
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and friends
        raise ExportError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from exc
    return read_metadata(model).recipe.to_json()


def _calibrated(args: argparse.Namespace, recipe: dict):
    """(recipe, input statistics) completed from the --calibration scenes: the histogram reference when asked for,
    and the statistics of the input they render to (None without --calibration)."""
    from minescan.export.calibration import histogram_reference, input_statistics
    from minescan.model.metadata import Recipe

    if args.normalisation == "histogram_match":
        if not args.calibration:
            raise ExportError("--normalisation histogram_match takes its reference from --calibration DIR scenes; give them")
        recipe = {**recipe, "normalisation": histogram_reference(args.calibration, Recipe.from_json(recipe)).to_json()}
    if not args.calibration:
        return recipe, None
    statistics = input_statistics(args.calibration, Recipe.from_json(recipe))
    return recipe, statistics


def _is_classifier(source: str) -> bool:
    """Whether ``source`` is a tile classifier: a Keras file, a SavedModel returning one rank-2 tensor, or an
    ONNX classifier (told by its outputs, :func:`minescan.model.contract.model_task`)."""
    from minescan.export.keras_classifier import is_keras_file, saved_model_is_classifier

    path = Path(source)
    if is_keras_file(path):
        return True
    if path.suffix.lower() == ".onnx":
        return _onnx_task(path) == "classifier"
    return path.is_dir() and saved_model_is_classifier(path)


def _onnx_task(path: Path) -> str | None:
    """``detector`` or ``classifier`` for an ONNX file, None when its outputs are neither (annotate_onnx says why)."""
    import onnx

    from minescan.export.convert import value_spec
    from minescan.model.contract import model_task

    try:
        graph = onnx.load(str(path), load_external_data=False).graph
        return model_task(str(path), [value_spec(v) for v in graph.input], [value_spec(v) for v in graph.output])
    except Exception:  # missing, unreadable or neither (ContractError): the annotate path reports it
        return None


def _check_task_options(args: argparse.Namespace, classifier: bool) -> None:
    """Refuse, before any conversion, the options that belong to the other kind of model."""
    if classifier:
        if args.drop_parts:
            raise ExportError("--drop-parts is for detectors (boxes inside boxes); this is a tile classifier")
        if args.input_size is not None:
            raise ExportError("--input-size is for detectors; a tile classifier's window is its own, or --window N "
                              "for a model that takes any size")
        return
    if args.window is not None or args.preprocess != "auto":
        raise ExportError(f"--window and --preprocess are for tile classifiers (.keras files, SavedModels returning "
                          f"[batch, classes]); {args.saved_model} is exported as a detector")


def run_export(args: argparse.Namespace) -> int:
    """Convert (and build the variant), then with ``--verify`` check each step; exit 1 if one disagrees.

    With ``--verify`` the model is written to a scratch folder first and moved over
    ``--out`` only once every check has passed, so a model that failed verification
    never lands where a user, or the next step of a script, expects a good one, and a
    good model already at ``--out`` is kept.
    """
    from minescan.results.atomic import write_atomically
    from minescan.model.labels import parse_labels
    from minescan.export.convert import export_onnx
    from minescan.export.verify import verify_export

    from minescan.export.variants import check_options

    check_options(args.target, args.precision, args.calibration)  # before the conversion's seconds
    if args.free_batch and args.target != "onnx":
        raise ExportError("--free-batch makes an ONNX Runtime model (for Triton's batching); it cannot go with --target tensorrt")
    if args.max_proposals is not None and args.max_proposals < 1:
        raise ExportError(f"--max-proposals must be at least 1, got {args.max_proposals}")
    from_onnx = Path(args.saved_model).suffix.lower() == ".onnx"
    classifier = _is_classifier(args.saved_model)
    _check_task_options(args, classifier)
    if classifier and args.max_proposals is not None:
        raise ExportError(f"--max-proposals is for two-stage detectors; {args.saved_model} is a tile classifier")
    if classifier and not from_onnx and not args.labels:
        from minescan.export.keras_classifier import missing_labels

        raise ExportError(missing_labels(args.saved_model))
    labels = parse_labels(args.labels) if args.labels else None
    plain = args.target == "onnx" and args.precision == "fp32" and args.input_size is None
    out = Path(args.out)
    recipe, statistics = _calibrated(args, _recipe(args, _recorded_recipe(args.saved_model) if from_onnx else None))
    postprocessing = {"drop_parts": args.drop_parts} if args.drop_parts else None
    loaded = None
    with tempfile.TemporaryDirectory(prefix="minescan-export-") as work:
        staged = Path(work) / out.name if args.verify or args.free_batch or args.max_proposals else out
        plain_path = staged if plain else Path(work) / "plain.onnx"
        if from_onnx:
            from minescan.export.convert import annotate_onnx

            meta = annotate_onnx(args.saved_model, plain_path, labels=labels, preprocessing=recipe,
                                 postprocessing=postprocessing, input_statistics=statistics, window=args.window)
            print(f"wrote {out if plain else plain_path.name}: {args.saved_model} ({meta.task}) with its metadata completed "
                  f"(recipe {json.dumps(meta.recipe.to_json())[:120]})"
                  + ("" if args.free_batch else "; the graph is unchanged"))
        elif classifier:
            from minescan.export.keras_classifier import export_keras_classifier, load_keras_classifier

            loaded = load_keras_classifier(args.saved_model, preprocess=args.preprocess, window=args.window)
            report = export_keras_classifier(loaded, plain_path, labels=labels, opset=args.opset, preprocessing=recipe,
                                             input_statistics=statistics)
            print(report.format())
        else:
            report = export_onnx(args.saved_model, plain_path, opset=args.opset, labels=labels, preprocessing=recipe,
                                 postprocessing=postprocessing, input_statistics=statistics)
            print(report.format())
        if statistics is not None:
            print(f"input statistics for the domain-shift guard: {statistics.pixels} px of {statistics.source}")
        if args.verify and loaded is not None:
            from minescan.export.keras_classifier import verify_keras_classifier

            windows = _verify_tiles(args, plain_path, synthetic=VERIFY_SYNTHETIC_WINDOWS)
            agreement = verify_keras_classifier(loaded, plain_path, windows)
            print("TF vs ONNX Runtime parity " + agreement.format())
            _check(agreement, "ONNX Runtime disagrees with TensorFlow", out)
        elif args.verify and not from_onnx:
            parity = verify_export(args.saved_model, plain_path, tiles=_verify_tiles(args, plain_path))
            print(parity.format())
            _check(parity, "ONNX Runtime disagrees with TensorFlow", out)
        if args.max_proposals is not None:
            _proposal_budget(args, plain_path)
        if not plain:
            _build_variant(args, plain_path, staged, classifier=classifier)
        if args.free_batch:
            _free_batch(staged)
        if args.verify or args.free_batch or args.max_proposals is not None:
            write_atomically(out, staged.read_bytes())
            print(f"verified; wrote {out}" if args.verify else f"wrote {out}")
    return 0


def _proposal_budget(args: argparse.Namespace, plain_path: Path) -> None:
    """--max-proposals: rewrite the plain export at ``plain_path`` in place so its first stage keeps K proposals
    (:mod:`minescan.export.proposals`); with --verify report the recall of the full model's detections on the
    --verify tiles (a smaller budget may lose some: that is the trade, so it is reported, not failed)."""
    from minescan.export.proposals import build_budget, proposal_recall

    full = plain_path.read_bytes()
    _, found = build_budget(plain_path, plain_path, args.max_proposals, where=args.saved_model)
    print(f"--max-proposals {args.max_proposals}: {found.format()}")
    if args.verify:
        recall = proposal_recall(full, plain_path, _verify_tiles(args, plain_path), args.max_proposals, found.count)
        print(recall.format() + ("" if recall.compared else "; nothing to compare: give --calibration scenes"))


def _free_batch(path: Path) -> None:
    """--free-batch: rewrite ``path`` with its graph looped over a symbolic batch (see
    :mod:`minescan.export.batch_loop`), checked against batch-1 calls on synthetic tiles; a graph
    whose batch is already symbolic is left as it is."""
    import onnx

    from minescan.export.batch_loop import check_tiles, free_batch, verify_free_batch
    from minescan.model.contract import INPUT_NAME
    from minescan.results.atomic import write_atomically

    model = onnx.load(str(path))
    first = next(v for v in model.graph.input if v.name == INPUT_NAME).type.tensor_type.shape.dim[:1]
    if not (first and first[0].HasField("dim_value")):
        print("--free-batch: the batch is already symbolic; the graph is left as it is")
        return
    freed = free_batch(model)
    print("--free-batch: " + verify_free_batch(model, freed, check_tiles(model)).format())
    write_atomically(path, freed.SerializeToString())


def _build_variant(args: argparse.Namespace, plain_path: Path, out_path: Path, *, classifier: bool = False) -> None:
    """Build the --target/--precision variant; with --verify compare it with the plain FP32 export
    (detections for a detector, probabilities per window for a classifier)."""
    from minescan.export.agreement import compare_classifier_precision, compare_precision
    from minescan.export.detections import run_onnx
    from minescan.export.variants import build_variant
    from minescan.export.verify import compare_detections, compare_probabilities, run_classifier

    variant = build_variant(plain_path, out_path, target=args.target, precision=args.precision,
                            calibration=args.calibration, input_size=args.input_size)
    print(variant.report.format())
    if not args.verify:
        return
    tiles = _verify_tiles(args, out_path, synthetic=VERIFY_SYNTHETIC_WINDOWS if classifier else 4)
    compare = compare_classifier_precision if classifier else compare_precision
    if args.target == "tensorrt":
        rewritten = (compare_probabilities(run_classifier(plain_path, tiles), run_classifier(variant.fp32_model, tiles))
                     if classifier else compare_detections(run_onnx(plain_path, tiles), run_onnx(variant.fp32_model, tiles)))
        print("tensorrt rewrite vs plain ONNX, " + rewritten.format())
        _check(rewritten, "the TensorRT rewrite disagrees with the plain ONNX export", args.out)
    if args.precision != "fp32":
        agreement = compare(variant.fp32_model, out_path, args.precision, tiles)
        print(agreement.format())
        # INT8's mixed-precision fallback (minescan.export.quantize): the ops nearest the outputs back in FP32.
        for tail in (FP32_TAILS if args.precision == "int8" else ()):
            if agreement.passed:
                break
            print(f"retrying int8 with the last {tail} quantizable ops in FP32")
            try:
                variant = build_variant(plain_path, out_path, target=args.target, precision=args.precision,
                                        calibration=args.calibration, input_size=args.input_size, fp32_tail=tail)
            except ExportError:  # fewer quantizable ops than that: nothing left to try
                break
            agreement = compare(variant.fp32_model, out_path, args.precision, tiles)
            print(agreement.format())
        _check(agreement, f"{args.precision} disagrees with fp32 beyond tolerance", args.out)


def _verify_tiles(args: argparse.Namespace, model_path: str | Path, *, synthetic: int = 4):
    """Tiles --verify compares on: ``synthetic`` synthetic ones, plus tiles of the --calibration scenes when given.

    A trained detector may find nothing on synthetic noise, and nothing compared proves
    nothing; real scene tiles, rendered with the model's recipe, give it something to find.
    They are cut at the model's input size, or for a model that takes any size at the
    scan's default tile (640 px): what a scan will feed it.
    """
    import numpy as np
    import onnx

    from minescan.export.onnx_metadata import read_metadata
    from minescan.export.calibration import calibration_tiles, tiles_for
    from minescan.export.detections import synthetic_tiles
    from minescan.export.variants import DEFAULT_INPUT_SIZE

    model = onnx.load(str(model_path), load_external_data=False)
    size = read_metadata(model).input_size or (DEFAULT_INPUT_SIZE, DEFAULT_INPUT_SIZE)
    tiles = synthetic_tiles(synthetic, size, seed=0)
    if args.calibration:
        recipe = read_metadata(model).recipe  # as exported: the normalisation included
        tiles = np.concatenate([tiles, calibration_tiles(args.calibration, size, recipe,
                                                         count=tiles_for(VERIFY_SCENE_TILES, size[0]))])
    return tiles


def _check(report: ParityReport | PrecisionReport | ProbabilityReport | ClassifierPrecisionReport, problem: str,
           path: str | Path) -> None:
    if not report.passed:
        raise ExportError(f"--verify: {problem} for {path}; nothing written")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``export`` to the command line."""
    export = sub.add_parser(
        "export",
        parents=[recipe_options()],
        help="convert a TF Object Detection API SavedModel or a Keras tile classifier to ONNX (needs the 'export' extra)",
        description="Convert a SavedModel (serving_default) to ONNX in the model contract, "
        "with labels and the preprocessing recipe (--bands, --gain, --offset) in its metadata; "
        "optionally rewritten for TensorRT's ONNX parser and in FP16 or INT8. A Keras tile classifier "
        "(.keras file, or a SavedModel returning [batch, classes]) becomes an ONNX classifier taking uint8 "
        "windows, its preprocessing (--preprocess) baked in.",
    )
    export.add_argument("saved_model", help="SavedModel directory (exported_model/saved_model), a Keras tile classifier "
                        "(.keras file, or a SavedModel directory from model.export()), or an ONNX detector or classifier "
                        "from elsewhere: its graph is kept and its minescan metadata completed (recipe, labels, "
                        "--calibration statistics), then built like a conversion (--target, --precision)")
    export.add_argument("--out", required=True, help="ONNX file to write")
    export.add_argument("--verify", action="store_true", help="run TF and ONNX Runtime on the same tiles and fail beyond tolerance "
                        "(and the TensorRT rewrite against the plain ONNX, FP16/INT8 against FP32)")
    export.add_argument("--labels", help="class names, e.g. other,mining (default for a detector: label_map.pbtxt next "
                        "to or above the SavedModel; a classifier needs them: one per output, or one, the positive "
                        "class, for a single sigmoid output)")
    export.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET}; tf2onnx refuses 19+)")
    export.add_argument("--target", choices=TARGETS, default="onnx",
                        help="onnx: as converted; tensorrt: rewritten so TensorRT's ONNX parser takes every node (default onnx)")
    export.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="fp16: feature trunk in FP16; int8: Q/DQ on the trunk's Conv/MatMul (default fp32)")
    export.add_argument("--calibration", metavar="DIR", help="GeoTIFF scenes like the training ones: their input statistics "
                        "go into the model for the domain-shift guard, INT8 calibrates on their tiles, and --verify "
                        "compares on them too (default: synthetic tiles only, no guard)")
    export.add_argument("--normalisation", choices=("gain", "stretch", "standardize", "histogram_match"),
                        help="how the model's input was normalised in training, applied by every scan: gain (fixed "
                        "--gain, the default), stretch (each band's --stretch percentiles over the scene to 0-255), "
                        "standardize (each band's scene mean/std to --standardize levels), histogram_match (each "
                        "band's scene histogram to that of the --calibration scenes under the fixed gain)")
    export.add_argument("--stretch", type=percentiles, metavar="LOW,HIGH", help="stretch percentiles (default 2,98)")
    export.add_argument("--standardize", type=percentiles, metavar="MEAN,STD",
                        help="uint8 mean and standard deviation a scene's bands are mapped to (default 110,40)")
    export.add_argument("--drop-parts", type=float, metavar="F",
                        help="record in the model that a scan drops a box lying at least F inside a larger box of another "
                             "class (its classes cannot nest, e.g. 0.7); default: not recorded, scans keep such boxes")
    export.add_argument("--free-batch", action="store_true",
                        help="run a graph that takes batch 1 only (TF OD API exports) once per image in an ONNX Loop, "
                             "so it takes any batch (what Triton's dynamic batching needs); checked against batch-1 "
                             "calls on synthetic tiles; --target onnx only")
    export.add_argument("--max-proposals", type=int, metavar="K",
                        help="two-stage detectors (Faster R-CNN): the first stage keeps at most K proposals instead of "
                             "its configured number (300 in the OD API zoo configs), so the second stage runs K times; "
                             "1..configured; --verify reports the recall of the full model's detections")
    export.add_argument("--input-size", type=int, metavar="PX",
                        help="fix the input to PX x PX (default: the model's own; for tensorrt, 640 if it takes any size)")
    classifiers = export.add_argument_group("tile classifiers (Keras)")
    classifiers.add_argument("--preprocess", choices=PREPROCESSES, default="auto",
                             help="what to bake in front of the model, which then takes the scan's uint8 windows: "
                             "mobilenet_v2 (x/127.5 - 1), unit (x/255), none (the model takes 0-255 itself, e.g. "
                             "EfficientNetV2 or a Rescaling layer); auto: none if it has a Rescaling layer, mobilenet_v2 "
                             "if it contains a keras.applications MobileNetV2, else none (default auto; it says which)")
    classifiers.add_argument("--window", type=int, metavar="PX",
                             help="window size in px, for a classifier that takes any size (default: the model's own)")
    export.set_defaults(handler=run_export)
