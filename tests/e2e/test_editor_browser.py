"""The pack in ComfyUI's graph editor, in headless Chromium (Debian's package, driven by Playwright).

What a user does: open the editor, find the pack's workflows in the template browser (or drop a file),
search for the pack's nodes, press Run, look at the transparent result. The editor's console is
compared with that of the same server without custom nodes: the pack may add no error of its own.
Screenshots of every shipped workflow as the editor opens it go to `.test-artifacts/editor/`.
"""

from __future__ import annotations

import io
import json
import urllib.request
from pathlib import Path

import hostenv
import numpy as np
import pytest
from host_server import ComfyServer
from PIL import Image
from playwright.sync_api import sync_playwright
from support import editor, fixtures

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
UI_WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
ARTIFACTS = REPO / ".test-artifacts" / "editor"
MODEL_INPUTS = ["ckpt_name", "control_net_name", "predictor_name"]  # name the user's files, not choices
PACK_CATEGORIES = {"layer_diffuse", "sketch_guidance"}


@pytest.fixture(scope="module")
def chromium():
    if not hostenv.CHROMIUM.exists():
        pytest.fail(f"{hostenv.CHROMIUM} is missing: install Debian's chromium package (python3 run.py --test does "
                    "it when run as root)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(hostenv.CHROMIUM), args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def pack_nodes(live_server) -> dict[str, dict]:
    with urllib.request.urlopen(f"{live_server.url}/object_info", timeout=60) as response:
        info = json.load(response)
    return {name: node for name, node in info.items() if node["python_module"].startswith("custom_nodes.")}


@pytest.fixture
def view(chromium, live_server):
    opened = editor.open_editor(chromium, live_server.url, 1600, 1000)
    yield opened
    opened.page.close()


def _registered_types(page) -> dict[str, str]:
    return page.evaluate("""() => Object.fromEntries(Object.entries(LiteGraph.registered_node_types)
        .map(([name, type]) => [name, type.category]))""")


def test_editor_loads_the_pack_without_errors_of_its_own(chromium, live_server, pack_nodes, tmp_path):
    with ComfyServer(hostenv.venv_python(), hostenv.COMFY_DIR, env=hostenv.host_environment(),
                     log_path=tmp_path / "plain.log",
                     extra_args=["--disable-all-custom-nodes", "--base-directory", str(tmp_path)]) as plain:
        baseline_view = editor.open_editor(chromium, plain.url)
        baseline, plain_types = baseline_view.new_errors(since=0), _registered_types(baseline_view.page)
        baseline_view.page.close()
    view = editor.open_editor(chromium, live_server.url)
    errors, types = view.new_errors(since=0), _registered_types(view.page)
    view.page.close()
    assert len(pack_nodes) == 14 and not set(pack_nodes) & set(plain_types)
    new_errors = [error for error in errors if error not in baseline]
    assert not new_errors, f"console errors with the pack that the plain editor does not show: {new_errors}"
    assert set(pack_nodes) <= set(types), f"not registered in the editor: {set(pack_nodes) - set(types)}"
    assert {types[n] for n in pack_nodes} == PACK_CATEGORIES


def test_template_browser_lists_the_pack_workflows_with_pictures(view):
    assert sorted(editor.pack_templates(view.page)) == [p.stem for p in UI_WORKFLOWS]
    view.page.wait_for_timeout(1500)  # the cards' pictures load lazily
    pictures = view.page.evaluate("""() => [...document.querySelectorAll("[data-testid^='template-workflow-'] img")]
        .map(img => [img.getAttribute('src'), img.complete && img.naturalWidth])""")
    missing = [url for url in view.missing if "workflow_templates/" in url]
    assert not missing, f"template pictures the server does not have: {missing}"
    assert pictures and all(width for _, width in pictures), pictures


@pytest.mark.parametrize("path", UI_WORKFLOWS, ids=[p.stem for p in UI_WORKFLOWS])
def test_every_workflow_opens_from_the_template_browser_cleanly(view, path):
    editor.load_template(view.page, path.stem)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    view.page.screenshot(path=str(ARTIFACTS / f"{path.stem}.png"))
    report = editor.layout_report(view.page, MODEL_INPUTS)
    shipped = sorted(node["type"] for node in json.loads(path.read_text())["nodes"])
    assert sorted(report["types"]) == shipped
    assert not report["unknown"], f"nodes the editor does not know: {report['unknown']}"
    assert not report["invalid"], f"widget values that are not among the choices: {report['invalid']}"
    assert not report["overlaps"], f"nodes drawn over each other: {report['overlaps']}"
    assert not report["randomized"], f"seeds that change after every run: {report['randomized']}"
    assert not report["cramped"], f"nodes smaller than their contents: {report['cramped']}"
    assert not editor.visible_dialog_texts(view.page), "the editor opened a dialog (missing nodes?)"
    assert not editor.error_toasts(view.page)
    assert not view.new_errors(), view.new_errors()
    assert not [url for url in view.missing if url.startswith("api/view")], \
        f"example pictures the workflow names are not in the input folder: {view.missing}"


def test_dropping_a_workflow_file_opens_it(view):
    path = REPO / "workflows" / "sd15_joint_layers.json"
    editor.drop_workflow(view.page, path)
    report = editor.layout_report(view.page, MODEL_INPUTS)
    assert sorted(report["types"]) == sorted(node["type"] for node in json.loads(path.read_text())["nodes"])
    assert not report["invalid"] and not report["unknown"]
    assert not editor.visible_dialog_texts(view.page) and not view.new_errors()


def test_node_search_finds_every_pack_node_by_its_display_name(view, pack_nodes):
    page = view.page
    for name, node in pack_nodes.items():
        page.evaluate("() => { app.graph.clear(); app.canvas.setDirty(true, true) }")
        page.wait_for_timeout(300)
        editor.open_node_search(page, ARTIFACTS)
        search = page.get_by_placeholder("Search Nodes...")
        search.fill(node["display_name"])
        page.locator(".p-dialog [role=option]", has_text=node["display_name"]).first.wait_for(timeout=10_000)
        options = [" ".join(text.split()) for text in page.locator(".p-dialog [role=option]").all_inner_texts()]
        shown = next(text for text in options if text)
        assert shown.startswith(node["display_name"]), f"searching {node['display_name']!r} shows {shown!r} first"
        assert node["category"] in shown and node["category"] in PACK_CATEGORIES
        page.keyboard.press("Enter")
        page.locator(".comfy-vue-node-search-container").wait_for(state="detached")
        assert page.evaluate("() => app.graph._nodes.map(n => n.type)") == [name]


def _widget(page, title: str, widget: str, value) -> None:
    page.evaluate("""([title, name, value]) => {
        const node = app.graph._nodes.find(n => n.title === title);
        node.widgets.find(w => w.name === name).value = value;
    }""", [title, widget, value])


def _run_and_wait_for_images(page, title: str, timeout_ms: int) -> list[str]:
    """Press Run; wait until node `title` shows images; their /view addresses."""
    page.locator("button", has_text="Run").first.click()
    page.wait_for_function("""title => { const node = app.graph._nodes.find(n => n.title === title);
        return node?.imgs?.length && node.imgs.every(img => img.complete && img.naturalWidth > 0); }""",
                           arg=title, timeout=timeout_ms)
    return page.evaluate("title => app.graph._nodes.find(n => n.title === title).imgs.map(i => i.src)", title)


def _node_picture(page, title: str) -> np.ndarray:
    """The node as drawn on the canvas, as pixels."""
    box = page.evaluate("""title => { const node = app.graph._nodes.find(n => n.title === title);
        const [x, y, w, h] = node.getBounding(); const [left, top] = app.canvas.ds.convertOffsetToCanvas([x, y]);
        const scale = app.canvas.ds.scale; const rect = app.canvas.canvas.getBoundingClientRect();
        return {x: rect.left + left, y: rect.top + top, width: w * scale, height: h * scale}; }""", title)
    return np.asarray(Image.open(io.BytesIO(page.screenshot(clip=box))).convert("RGB")).astype(int)


def test_run_button_generates_and_the_editor_shows_the_rgba_result(view, live_server):
    page = view.page
    editor.load_template(page, "sd15_transparent")
    for title, widget, value in [("Load SD1.5 checkpoint", "ckpt_name", fixtures.SD15_CHECKPOINT),
                                 ("Empty Latent Image", "width", 64), ("Empty Latent Image", "height", 64),
                                 ("KSampler", "steps", 1), ("Layer Diffuse Decode (RGBA)", "augmentations", "1")]:
        _widget(page, title, widget, value)
    [address] = _run_and_wait_for_images(page, "Save transparent PNG", timeout_ms=600_000)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "run_result.png"))
    with urllib.request.urlopen(address, timeout=30) as response:
        shown = Image.open(io.BytesIO(response.read()))
    assert shown.mode == "RGBA" and shown.size == (64, 64)
    alpha = np.asarray(shown.getchannel("A"))
    assert alpha.min() < alpha.max(), "the shown result has flat alpha"
    assert not editor.error_toasts(page) and not view.new_errors(), view.new_errors()


def test_previews_show_transparency_on_a_checkerboard(view, live_server):
    """A 256 px picture, clear but for an opaque 128 px square, previewed in the editor: the checkerboard
    shows through where alpha is 0 (two greys), the editor's flat node colour when it is turned off."""
    page = view.page
    picture = np.zeros((256, 256, 4), np.uint8)
    picture[64:192, 64:192] = (200, 60, 40, 255)
    Image.fromarray(picture, "RGBA").save(live_server.base / "input" / "editor_checkerboard.png")
    page.evaluate("""() => app.loadApiJson({
        "1": {"class_type": "LoadImage", "inputs": {"image": "editor_checkerboard.png"}},
        "2": {"class_type": "JoinImageWithAlpha", "inputs": {"image": ["1", 0], "alpha": ["1", 1]}},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}, "_meta": {"title": "Transparent"}}
    }, "checkerboard")""")
    page.wait_for_timeout(500)
    page.evaluate("() => { const n = app.graph._nodes.find(n => n.type === 'PreviewImage'); n.title = 'Transparent';"
                  " n.pos = [700, 100]; n.size = [400, 460]; app.canvas.ds.scale = 1; app.canvas.ds.offset = [0, 0]; }")
    _run_and_wait_for_images(page, "Transparent", timeout_ms=120_000)
    page.wait_for_timeout(500)
    with_board = _node_picture(page, "Transparent")
    editor.set_setting(page, "LayerSketch.CheckerboardPreviews", False)
    page.evaluate("() => app.canvas.setDirty(true, true)")
    page.wait_for_timeout(500)
    without_board = _node_picture(page, "Transparent")
    editor.set_setting(page, "LayerSketch.CheckerboardPreviews", True)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    Image.fromarray(with_board.astype(np.uint8)).save(ARTIFACTS / "checkerboard_preview.png")

    changed = np.abs(with_board - without_board).sum(-1) > 30
    clear_pixels = 256 * 256 - 128 * 128
    assert 0.9 * clear_pixels < changed.sum() < 1.1 * clear_pixels, \
        f"turning the checkerboard off changed {changed.sum()} pixels, not the {clear_pixels} clear ones"
    board_colours = {tuple(c) for c in with_board[changed]}
    greys = {c for c in board_colours if max(c) - min(c) < 8}
    assert len({c[0] // 16 for c in greys}) >= 2, f"no two-grey checkerboard behind the picture: {list(greys)[:8]}"
    _, counts = np.unique(without_board[changed], axis=0, return_counts=True)
    assert counts.max() > 0.95 * changed.sum(), "without the board, the clear background should be one flat colour"
