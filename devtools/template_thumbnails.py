"""Make the template browser's pictures of the shipped workflows (workflows/<name>.jpg).

The editor's template browser shows `<name>.jpg` beside each of the pack's workflows. The pictures are
the workflows themselves as the editor draws them (loaded from the template browser, whole graph in
view, the editor's own panels hidden), in Debian's headless Chromium, with the selected host's editor
(LAYER_SKETCH_HOST; the newest supported host when unset):

    .host/<version>/venv/bin/python -P devtools/template_thumbnails.py [NAME ...]

Only the graph is drawn: no missing-model marks (the workflows name model files this machine may not
have), no minimap or canvas info. With NAMEs, only those workflows' pictures are made.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import hostenv
from host_server import ComfyServer
from PIL import Image
from support import editor

REPO = Path(__file__).resolve().parent.parent
SIDE, SAVED_SIDE = 1100, 512
# Settings for the pictures, where the editor has them: text drawn even when small, no canvas info, no
# minimap, no red marks on nodes whose model file is missing here (1.47: they follow the errors tab).
PICTURE_SETTINGS = {"LiteGraph.Canvas.MinFontSizeForLOD": 1, "Comfy.Graph.CanvasInfo": False,
                    "Comfy.Minimap.Visible": False, "Comfy.RightSidePanel.ShowErrorsTab": False}

FRAME_GRAPH = """(side) => {
    const boxes = app.graph._nodes.map(n => n.getBounding());
    const left = Math.min(...boxes.map(b => b[0])), top = Math.min(...boxes.map(b => b[1]));
    const width = Math.max(...boxes.map(b => b[0] + b[2])) - left;
    const height = Math.max(...boxes.map(b => b[1] + b[3])) - top;
    const scale = 0.94 * Math.min(side / width, side / height);
    const rect = app.canvas.canvas.getBoundingClientRect();
    app.canvas.ds.scale = scale;
    app.canvas.ds.offset = [(side / scale - width) / 2 - left - rect.left / scale,
                            (side / scale - height) / 2 - top - rect.top / scale];
    app.canvas.deselectAll?.();
    app.canvas.setDirty(true, true);
}"""
CANVAS_ONLY = "* { visibility: hidden !important; } #graph-canvas { visibility: visible !important; }"


def thumbnail(view: editor.Editor, name: str) -> Image.Image:
    editor.load_template(view, name)
    style = view.page.add_style_tag(content=CANVAS_ONLY)
    view.page.evaluate(FRAME_GRAPH, SIDE)
    editor.settle(view)
    picture = Image.open(io.BytesIO(view.page.screenshot(clip={"x": 0, "y": 0, "width": SIDE, "height": SIDE})))
    style.evaluate("element => element.remove()")
    return picture.convert("RGB").resize((SAVED_SIDE, SAVED_SIDE), Image.Resampling.LANCZOS)


def main(names: list[str]) -> None:
    hostenv.ensure_host()
    hostenv.ensure_browser()
    names = names or editor.PACK_WORKFLOWS
    with ComfyServer(hostenv.venv_python(), hostenv.COMFY_DIR, env=hostenv.host_environment()) as server, \
            editor.chromium() as browser:
        view = editor.open_editor(browser, server.url, SIDE, SIDE)
        for setting, value in PICTURE_SETTINGS.items():
            if view.page.evaluate("id => app.extensionManager.setting.get(id) !== undefined", setting):
                editor.set_setting(view, setting, value)
        print(f"ComfyUI {hostenv.HOST.version}, editor {editor.installed_version()}")
        for name in names:
            path = REPO / "workflows" / f"{name}.jpg"
            thumbnail(view, name).save(path, quality=85, optimize=True)
            print(f"wrote workflows/{path.name}")


if __name__ == "__main__":
    main(sys.argv[1:])
