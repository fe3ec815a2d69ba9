"""The workflows' example pictures reach the host's input folder, and never replace a user's file."""

from __future__ import annotations

import json

import folder_paths
import pytest
from comfyui_layer_sketch.common.host import EXAMPLES, install_example_inputs
from PIL import Image


@pytest.fixture
def input_folder(tmp_path):
    saved = folder_paths.get_input_directory()
    folder_paths.set_input_directory(str(tmp_path / "input"))
    yield tmp_path / "input"
    folder_paths.set_input_directory(saved)


def test_every_example_the_workflows_name_is_shipped():
    named = set()
    for path in (EXAMPLES.parent / "api").glob("*.json"):
        named |= {n["inputs"]["image"] for n in json.loads(path.read_text()).values()
                  if n["class_type"] == "LoadImage"}
    assert named and named <= {p.name for p in EXAMPLES.glob("*.png")}


def test_examples_are_copied_once_and_a_users_file_wins(input_folder):
    input_folder.mkdir()
    Image.new("RGB", (8, 8), (255, 0, 0)).save(input_folder / "layer_sketch_example_sketch.png")
    copied = install_example_inputs()
    assert "layer_sketch_example_sketch.png" not in copied and len(copied) == len(list(EXAMPLES.glob("*.png"))) - 1
    assert Image.open(input_folder / "layer_sketch_example_sketch.png").size == (8, 8)
    transparent = Image.open(input_folder / "layer_sketch_example_transparent.png")
    assert transparent.mode == "RGBA" and transparent.getchannel("A").getextrema() == (0, 255)
    assert install_example_inputs() == []
    assert not list(input_folder.glob(".*.part"))


def test_an_unwritable_input_folder_is_reported_not_raised(tmp_path, caplog):
    (tmp_path / "not_a_folder").write_text("")
    saved = folder_paths.get_input_directory()
    folder_paths.set_input_directory(str(tmp_path / "not_a_folder" / "input"))
    try:
        assert install_example_inputs() == []
    finally:
        folder_paths.set_input_directory(saved)
    assert "could not copy the example picture" in caplog.text
