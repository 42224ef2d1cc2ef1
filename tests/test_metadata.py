"""Model metadata is checked when the model loads: one line naming the file, the key and the value."""

import json

import onnx
import pytest

from minescan.cli import main
from minescan.engine import load_detector
from minescan.errors import MinescanError
from minescan.model.contract import ContractError
from minescan.model.metadata import MetadataError, parse_metadata
from testkit.square_detector import save_square_detector


def _with_metadata(path, **entries):
    """Rewrite ``path``'s ``minescan.<key>`` metadata entries (a str is stored verbatim, anything else as JSON)."""
    model = onnx.load(str(path))
    props = {p.key: p.value for p in model.metadata_props}
    for key, value in entries.items():
        props[f"minescan.{key}"] = value if isinstance(value, str) else json.dumps(value)
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return path


@pytest.fixture
def model_file(tmp_path):
    return save_square_detector(tmp_path / "model.onnx")


def _refused(path, expected):
    with pytest.raises(MetadataError) as caught:
        load_detector(path)
    message = str(caught.value)
    assert isinstance(caught.value, ContractError) and isinstance(caught.value, MinescanError)
    assert message == f"{path}: {expected}"
    assert "\n" not in message and "--" not in message
    return message


PREPROCESSING = {"bands": [3, 2, 1], "gain": 2.5, "offset": 0, "scale": 10000}

BAD = [
    ({"preprocessing": {**PREPROCESSING, "gain": "abc"}}, "metadata 'minescan.preprocessing': 'gain' must be a number, got 'abc'"),
    ({"preprocessing": {**PREPROCESSING, "bands": "3,2,1"}}, "metadata 'minescan.preprocessing': 'bands' must be null or 3 1-based band numbers, got '3,2,1'"),
    ({"preprocessing": {**PREPROCESSING, "bands": [3, 2, 0]}}, "metadata 'minescan.preprocessing': 'bands' must be null or 3 1-based band numbers, got [3, 2, 0]"),
    ({"preprocessing": {**PREPROCESSING, "scale": 0}}, "metadata 'minescan.preprocessing': 'scale' must be positive, got 0"),
    ({"preprocessing": {**PREPROCESSING, "gain": -1}}, "metadata 'minescan.preprocessing': 'gain' must be positive, got -1"),
    ({"preprocessing": {**PREPROCESSING, "offset": True}}, "metadata 'minescan.preprocessing': 'offset' must be a number, got True"),
    ({"preprocessing": '{"gain": Infinity}'}, "metadata 'minescan.preprocessing': 'gain' must be a number, got inf"),
    ({"preprocessing": {**PREPROCESSING, "gian": 2}}, "metadata 'minescan.preprocessing' has unknown key 'gian' (known: bands, gain, offset, scale, normalisation)"),
    ({"preprocessing": [3, 2, 1]}, "metadata 'minescan.preprocessing' must be an object, got [3, 2, 1]"),
    ({"preprocessing": "{gain: 2"}, "metadata 'minescan.preprocessing' is not JSON: '{gain: 2'"),
    ({"labels": ["mine"]}, "metadata 'minescan.labels' must map class ids to names, got ['mine']"),
    ({"labels": {"1": {"name": "mine"}}}, "metadata 'minescan.labels': the name of class 1 must be a non-empty string, got {'name': 'mine'}"),
    ({"labels": {"1": 7}}, "metadata 'minescan.labels': the name of class 1 must be a non-empty string, got 7"),
    ({"labels": {"mine": "1"}}, "metadata 'minescan.labels': class id 'mine' is not a positive integer"),
    ({"labels": {"0": "background"}}, "metadata 'minescan.labels': class id '0' is not a positive integer"),
    ({"postprocessing": {"drop_parts": 1.5}}, "metadata 'minescan.postprocessing': 'drop_parts' must be a number in [0, 1], got 1.5"),
    ({"postprocessing": {"drop_parts": "0.7"}}, "metadata 'minescan.postprocessing': 'drop_parts' must be a number in [0, 1], got '0.7'"),
    ({"postprocessing": {"drop_part": 0.7}}, "metadata 'minescan.postprocessing' has unknown key 'drop_part' (known: drop_parts)"),
    ({"input_size": [512]}, "metadata 'minescan.input_size' must be null or [height, width] in pixels, got [512]"),
    ({"tool_versions": "1.0"}, "metadata 'minescan.tool_versions' must be an object, got 1.0"),
]


@pytest.mark.parametrize("entries, expected", BAD, ids=[json.dumps(entries)[:48] for entries, _ in BAD])
def test_bad_metadata_is_refused_at_load(model_file, entries, expected):
    _refused(_with_metadata(model_file, **entries), expected)


def test_good_metadata_loads(model_file):
    _with_metadata(model_file, preprocessing=PREPROCESSING, postprocessing={"drop_parts": 0.7}, labels={"1": "a", "2": "b"})
    meta = load_detector(model_file).metadata
    assert meta.recipe.bands == (3, 2, 1) and meta.recipe.scale == 10000.0
    assert meta.postprocessing.drop_parts == 0.7 and meta.labels == {1: "a", 2: "b"}


def test_input_size_contradicting_the_graph_is_refused(tmp_path):
    path = _with_metadata(save_square_detector(tmp_path / "model.onnx", size=(640, 640)), input_size=[512, 512])
    _refused(path, "metadata 'minescan.input_size' [512, 512] contradicts the graph's input 640x640")


def test_input_size_agreeing_with_the_graph_or_a_run_time_size_loads(tmp_path):
    fixed = save_square_detector(tmp_path / "fixed.onnx", size=(640, 640))
    assert load_detector(fixed).metadata.input_size == (640, 640)
    dynamic = _with_metadata(save_square_detector(tmp_path / "dynamic.onnx"), input_size=[512, 512])
    assert load_detector(dynamic).metadata.input_size == (512, 512)


def test_parse_metadata_alone_names_the_key():
    with pytest.raises(MetadataError, match=r"^metadata 'minescan.preprocessing': 'gain' must be a number, got 'abc'$"):
        parse_metadata({"minescan.preprocessing": json.dumps({"gain": "abc"})})


def test_cli_prints_one_line_naming_the_file_and_key(capsys, model_file, make_scene, tmp_path):
    scene, _ = make_scene(width=300, height=300, objects=1)
    _with_metadata(model_file, preprocessing={**PREPROCESSING, "gain": "abc"})
    out = tmp_path / "r.gpkg"
    assert main(["scan", str(scene), "--model", str(model_file), "--out", str(out)]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"minescan: error: {model_file}: metadata 'minescan.preprocessing': 'gain' must be a number, got 'abc'"]
    assert not out.exists()
