"""The pack in ComfyUI's graph editor, in headless Chromium (Debian's package, driven by Playwright).

What a user does: open the editor, find the pack's workflows in the template browser (or drop a file),
search for the pack's nodes, press Run, look at the transparent result. The editor's console is
compared with that of the same server without custom nodes: the pack may add no error of its own.
Written against the newest host's editor; what differs between editors is in `support/editor.py`
(`test_editor_smoke.py` covers the oldest supported one). One page serves the whole module, each test
counting only what happened since it started. Screenshots of every shipped workflow as the editor
opens it, the run and the checkerboard go to `.test-artifacts/editor/<editor version>/`.
"""

from __future__ import annotations

import io
import json
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from comfyui_layer_sketch import NODE_CLASS_MAPPINGS
from PIL import Image
from support import checkerboard, editor, fixtures

pytestmark = [pytest.mark.e2e, pytest.mark.newest_host]

REPO = Path(__file__).resolve().parents[2]
UI_WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))


def test_editor_loads_the_pack_without_errors_of_its_own(chromium, live_server, pack_nodes, tmp_path):
    baseline, plain_types = editor.plain_start_up_report(chromium, tmp_path)
    errors, types = editor.start_up_report(chromium, live_server.url)
    assert set(pack_nodes) == set(NODE_CLASS_MAPPINGS) and not set(pack_nodes) & set(plain_types)
    new_errors = [error for error in errors if error not in baseline]
    assert not new_errors, f"console errors with the pack that the plain editor does not show: {new_errors}"
    assert set(pack_nodes) <= set(types), f"not registered in the editor: {set(pack_nodes) - set(types)}"
    assert {types[n] for n in pack_nodes} == editor.PACK_CATEGORIES


def test_template_browser_lists_the_pack_workflows_with_pictures(view):
    assert sorted(editor.pack_templates(view)) == [p.stem for p in UI_WORKFLOWS]
    pictures = editor.template_pictures(view)
    view.screenshot("template_browser")
    editor.close_dialogs(view)
    missing = [url for url in view.missing if "workflow_templates/" in url]
    assert not missing, f"template pictures the server does not have: {missing}"
    assert sorted(pictures) == [p.stem for p in UI_WORKFLOWS]
    assert all(width > 0 for width in pictures.values()), f"cards without their picture: {pictures}"


def _assert_opens_cleanly(view, path: Path) -> None:
    report = editor.layout_report(view, editor.MODEL_INPUTS)
    shipped = sorted(node["type"] for node in json.loads(path.read_text())["nodes"])
    assert sorted(report["types"]) == shipped
    assert not report["unknown"], f"nodes the editor does not know: {report['unknown']}"
    assert not report["invalid"], f"widget values that are not among the choices: {report['invalid']}"
    assert not report["overlaps"], f"nodes drawn over each other: {report['overlaps']}"
    assert not report["randomized"], f"seeds that change after every run: {report['randomized']}"
    assert not report["cramped"], f"nodes smaller than their contents: {report['cramped']}"
    assert not editor.problems(view, editor.MODEL_INPUTS), editor.problems(view, editor.MODEL_INPUTS)
    assert not view.new_errors(view.since), view.new_errors(view.since)
    assert not [url for url in view.missing if url.startswith("api/view")], \
        f"example pictures the workflow names are not in the input folder: {view.missing}"


@pytest.mark.parametrize("path", UI_WORKFLOWS, ids=[p.stem for p in UI_WORKFLOWS])
def test_every_workflow_opens_from_the_template_browser_cleanly(view, path):
    editor.load_template(view, path.stem)
    view.screenshot(path.stem)
    _assert_opens_cleanly(view, path)


def test_dropping_a_workflow_file_opens_it(view):
    path = REPO / "workflows" / "sd15_joint_layers.json"
    editor.drop_workflow(view, path)
    view.screenshot("dropped_workflow")
    _assert_opens_cleanly(view, path)


def test_node_search_finds_every_pack_node_by_its_display_name(view, pack_nodes):
    page = view.page
    for name, node in pack_nodes.items():
        page.evaluate("() => { app.graph.clear(); app.canvas.setDirty(true, true) }")
        editor.settle(view)
        editor.open_node_search(view)
        shown = editor.search_results(view, node["display_name"])[0]
        if name == "LayerDiffuseDecode":
            view.screenshot("node_search")
        assert shown.startswith(node["display_name"]), f"searching {node['display_name']!r} shows {shown!r} first"
        assert node["category"] in shown and node["category"] in editor.PACK_CATEGORIES
        editor.add_first_search_result(view)
        assert page.evaluate("() => app.graph._nodes.map(n => n.type)") == [name]
    assert not view.new_errors(view.since), view.new_errors(view.since)


def test_run_button_generates_and_the_editor_shows_the_rgba_result(view, live_server):
    editor.load_template(view, "sd15_transparent")
    for title, widget, value in [("Load SD1.5 checkpoint", "ckpt_name", fixtures.SD15_CHECKPOINT),
                                 ("Empty Latent Image", "width", 64), ("Empty Latent Image", "height", 64),
                                 ("KSampler", "steps", 1), ("Layer Diffuse Decode (RGBA)", "augmentations", "1")]:
        editor.set_widget(view, title, widget, value)
    editor.press_run(view)
    [address] = editor.wait_for_node_images(view, "Save transparent PNG", timeout_ms=600_000)
    editor.settle(view)
    view.screenshot("run_result")
    with urllib.request.urlopen(address, timeout=30) as response:
        shown = Image.open(io.BytesIO(response.read()))
    assert shown.mode == "RGBA" and shown.size == (64, 64)
    alpha = np.asarray(shown.getchannel("A"))
    assert alpha.min() < alpha.max(), "the shown result has flat alpha"
    assert not editor.problems(view, editor.MODEL_INPUTS), editor.problems(view, editor.MODEL_INPUTS)
    assert not view.new_errors(view.since), view.new_errors(view.since)


@pytest.mark.parametrize("node_view", ["classic", "vue"])
def test_previews_show_transparency_on_a_checkerboard(view, live_server, node_view):
    """A 256 px picture, clear but for an opaque 128 px square, previewed in the editor: the checkerboard
    shows through where alpha is 0 (two greys), the editor's flat node colour when it is turned off. The
    editor's default canvas nodes, and its Vue node view ("Nodes 2.0", off by default) where previews are
    page elements."""
    checkerboard.write_checkerboard_picture(live_server.base / "input")
    checkerboard.preview_transparent_picture(view)
    try:
        if node_view == "vue":
            checkerboard.set_vue_nodes(view, True)
        with_board, without_board = checkerboard.checkerboard_pictures(view)
    finally:
        if node_view == "vue":
            checkerboard.set_vue_nodes(view, False)
    Image.fromarray(with_board.astype(np.uint8)).save(editor.artifacts_dir() / f"checkerboard_{node_view}.png")
    faults = checkerboard.checkerboard_faults(with_board, without_board)
    assert not faults, f"{faults} (see {editor.artifacts_dir()}/checkerboard_{node_view}.png)"
    assert not view.new_errors(view.since), view.new_errors(view.since)
