from pathlib import Path

import pytest

from minescan.model.labels import LabelsError
from minescan.errors import MinescanError
from minescan.export.errors import ExportError
from minescan.export.label_map import find_label_map, parse_label_map, read_label_map, write_label_map

OD_API_STYLE = """
item {
  name: "/m/01"
  id: 1
  display_name: "illegal_mining"
}
item { id: 2 name: 'legal_mining' }
"""


def test_parse_prefers_display_name_like_the_od_api():
    assert parse_label_map(OD_API_STYLE) == {1: "illegal_mining", 2: "legal_mining"}


def test_write_then_read_round_trips(tmp_path: Path):
    labels = {2: "legal_mining", 1: "illegal_mining", 7: "tailings"}
    write_label_map(tmp_path / "label_map.pbtxt", labels)
    assert read_label_map(tmp_path / "label_map.pbtxt") == labels


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "no 'item"),
        ("item { name: 'x' }", "without an integer id"),
        ("item { id: 0 name: 'x' }", "item 0 needs id >= 1"),
        ("item { id: 1 name: 'a' } item { id: 1 name: 'b' }", "class id 1 appears twice"),
    ],
)
def test_parse_errors_name_the_fault(text: str, fragment: str):
    with pytest.raises(LabelsError, match=fragment) as caught:
        parse_label_map(text, "lm.pbtxt")
    assert isinstance(caught.value, MinescanError)
    assert "\n" not in str(caught.value)


def test_find_looks_in_the_dir_and_up_to_two_levels(tmp_path: Path):
    deep = tmp_path / "a" / "b" / "saved_model"
    deep.mkdir(parents=True)
    assert find_label_map(deep) is None
    write_label_map(tmp_path / "a" / "label_map.pbtxt", {1: "x"})
    assert find_label_map(deep) == (tmp_path / "a" / "label_map.pbtxt").resolve()
    write_label_map(deep / "label_map.pbtxt", {1: "y"})
    assert find_label_map(deep) == (deep / "label_map.pbtxt").resolve()


def test_unreadable_file_is_an_export_error(tmp_path: Path):
    with pytest.raises(ExportError, match="cannot read label map .*missing.pbtxt"):
        read_label_map(tmp_path / "missing.pbtxt")
