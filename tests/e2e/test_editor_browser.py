"""The pack in ComfyUI's graph editor, in headless Chromium (Debian's package, driven by Playwright).

The editor's console is compared with that of the same server without custom nodes: the pack may add
no error of its own.
"""

from __future__ import annotations

import re

import hostenv
import pytest
from host_server import ComfyServer
from playwright.sync_api import sync_playwright

pytestmark = pytest.mark.e2e

PACK_NODES = {"LayerDiffuseApply", "LayerDiffuseJointApply", "LayerDiffuseCondJointApply", "LayerDiffuseCondApply",
              "LayerDiffuseDiffApply", "LayerDiffuseDecode", "LayerDiffuseDecodeSplit", "LayerDiffuseEncode",
              "LayerDiffuseComposite", "LayerDiffuseSaveLayers", "SketchGuidanceLoadPredictor", "SketchGuidanceApply",
              "SketchGuidanceTrainPredictor", "SketchToEdgeMap"}


@pytest.fixture(scope="module")
def chromium():
    if not hostenv.CHROMIUM.exists():
        pytest.fail(f"{hostenv.CHROMIUM} is missing: install Debian's chromium package (python3 run.py --test does "
                    "it when run as root)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(hostenv.CHROMIUM), args=["--no-sandbox"])
        yield browser
        browser.close()


def _open_editor(chromium, url: str, screenshot=None) -> tuple[list[str], dict]:
    """Load the editor; return its console errors (addresses made neutral) and the registered node types."""
    page = chromium.new_page(viewport={"width": 1400, "height": 900})
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(f"uncaught: {error}"))
    page.goto(url, wait_until="networkidle")
    page.wait_for_function("window.app && window.app.graph && window.LiteGraph", timeout=90_000)
    page.wait_for_timeout(1500)  # late extension errors
    types = page.evaluate("""() => Object.fromEntries(Object.entries(LiteGraph.registered_node_types)
        .map(([name, type]) => [name, type.category]))""")
    if screenshot is not None:
        page.screenshot(path=str(screenshot))
    page.close()
    return sorted({re.sub(r"127\.0\.0\.1:\d+", "HOST", error) for error in errors}), types


def test_editor_loads_the_pack_without_errors_of_its_own(chromium, live_server, tmp_path):
    with ComfyServer(hostenv.venv_python(), hostenv.COMFY_DIR, env=hostenv.host_environment(),
                     log_path=tmp_path / "plain.log",
                     extra_args=["--disable-all-custom-nodes", "--base-directory", str(tmp_path)]) as plain:
        baseline, plain_types = _open_editor(chromium, plain.url)
    errors, types = _open_editor(chromium, live_server.url, live_server.base / "editor.png")
    assert not PACK_NODES & set(plain_types)
    new_errors = [error for error in errors if error not in baseline]
    assert not new_errors, f"console errors with the pack that the plain editor does not show: {new_errors}"
    assert PACK_NODES <= set(types), f"not registered in the editor: {PACK_NODES - set(types)}"
    assert {types[n] for n in PACK_NODES} == {"layer_diffuse", "sketch_guidance"}
