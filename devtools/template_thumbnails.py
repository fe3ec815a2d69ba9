"""Make the template browser's pictures of the shipped workflows (workflows/<name>.jpg).

The editor's template browser shows `<name>.jpg` beside each of the pack's workflows. The pictures are
the workflows themselves as the editor draws them (loaded from the template browser, whole graph in
view), in Debian's headless Chromium:

    .host/venv/bin/python -P devtools/template_thumbnails.py
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "devtools"), str(REPO / "tests")]

import hostenv  # noqa: E402
from host_server import ComfyServer  # noqa: E402
from PIL import Image  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402
from support import editor  # noqa: E402

SIDE, SAVED_SIDE = 1100, 512


FRAME_GRAPH = """(side) => {
    const boxes = app.graph._nodes.map(n => n.getBounding());
    const left = Math.min(...boxes.map(b => b[0])), top = Math.min(...boxes.map(b => b[1]));
    const width = Math.max(...boxes.map(b => b[0] + b[2])) - left;
    const height = Math.max(...boxes.map(b => b[1] + b[3])) - top;
    const scale = 0.94 * Math.min(side / width, side / height);
    app.canvas.ds.scale = scale;
    app.canvas.ds.offset = [(side / scale - width) / 2 - left, (side / scale - height) / 2 - top];
    app.canvas.setDirty(true, true);
}"""
CANVAS_ONLY = "* { visibility: hidden !important; } #graph-canvas { visibility: visible !important; }"


def thumbnail(page, name: str) -> Image.Image:
    editor.load_template(page, name)
    style = page.add_style_tag(content=CANVAS_ONLY)
    page.evaluate(FRAME_GRAPH, SIDE)
    page.wait_for_timeout(500)
    picture = Image.open(io.BytesIO(page.screenshot())).convert("RGB")
    style.evaluate("element => element.remove()")
    return picture.resize((SAVED_SIDE, SAVED_SIDE), Image.Resampling.LANCZOS)


def main() -> None:
    hostenv.ensure_host()
    hostenv.ensure_browser()
    names = sorted(p.stem for p in (REPO / "workflows").glob("*.json"))
    with ComfyServer(hostenv.venv_python(), hostenv.COMFY_DIR, env=hostenv.host_environment()) as server, \
            sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(hostenv.CHROMIUM), args=["--no-sandbox"])
        view = editor.open_editor(browser, server.url, SIDE, SIDE)
        editor.set_setting(view.page, "LiteGraph.Canvas.MinFontSizeForLOD", 1)  # draw text even when small
        editor.set_setting(view.page, "Comfy.Graph.CanvasInfo", False)
        for name in names:
            path = REPO / "workflows" / f"{name}.jpg"
            thumbnail(view.page, name).save(path, quality=85, optimize=True)
            print(f"wrote workflows/{path.name}")
        browser.close()


if __name__ == "__main__":
    main()
