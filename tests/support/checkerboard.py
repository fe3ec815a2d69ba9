"""The pack's checkerboard behind transparent previews, as the graph editor draws it (browser tests).

A picture clear but for an opaque square is previewed; the node is captured with the pack's setting on
and off, and `checkerboard_faults` says what is wrong with the difference, whatever size it is shown at.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from .editor import Editor, press_run, script, set_setting, settle, wait_for_node_images

CHECKERBOARD_SETTING = "LayerSketch.CheckerboardPreviews"

CHECKERBOARD_PICTURE = "editor_checkerboard.png"
CLEAR_FRACTION = 0.75  # of the picture: clear but for an opaque square of half its side


def write_checkerboard_picture(input_dir: Path) -> None:
    """A 256 px picture, clear but for an opaque 128 px square, in the server's input folder."""
    picture = np.zeros((256, 256, 4), np.uint8)
    picture[64:192, 64:192] = (200, 60, 40, 255)
    Image.fromarray(picture, "RGBA").save(input_dir / CHECKERBOARD_PICTURE)


def preview_transparent_picture(editor: Editor) -> None:
    """Load Image -> Join Image with Alpha -> Preview Image ("Transparent", 400 x 460 at zoom 1), Run."""
    page = editor.page
    page.evaluate(script("load_transparent_preview"), CHECKERBOARD_PICTURE)
    page.wait_for_function("() => app.graph._nodes.some(n => n.type === 'PreviewImage')", timeout=30_000)
    page.evaluate(script("place_transparent_preview"))
    settle(editor)
    press_run(editor)
    wait_for_node_images(editor, "Transparent", timeout_ms=180_000)
    settle(editor)


def node_picture(editor: Editor, title: str) -> np.ndarray:
    """The node as drawn (on the canvas, or its element in the Vue node view), as RGB pixels."""
    page = editor.page
    node_id = page.evaluate("title => String(app.graph._nodes.find(n => n.title === title).id)", title)
    element = page.locator(editor.ui.vue_node.format(id=node_id))
    if element.count():
        box = element.bounding_box()
    else:
        box = page.evaluate(script("node_box"), title)
    return np.asarray(Image.open(io.BytesIO(page.screenshot(clip=box))).convert("RGB")).astype(int)


def set_vue_nodes(editor: Editor, on: bool) -> None:
    """Turn the Vue (DOM) node view on or off; on: wait for the nodes' elements and their pictures."""
    set_setting(editor, editor.ui.vue_nodes_setting, on)
    if on:
        editor.page.wait_for_function(script("vue_node_pictures_loaded"), timeout=30_000)
        settle(editor)


def checkerboard_pictures(editor: Editor) -> tuple[np.ndarray, np.ndarray]:
    """The "Transparent" preview node with the pack's checkerboard setting on, then off (restored)."""
    with_board = node_picture(editor, "Transparent")
    set_setting(editor, CHECKERBOARD_SETTING, False)
    try:
        editor.page.evaluate("() => app.canvas.setDirty(true, true)")
        settle(editor)
        without_board = node_picture(editor, "Transparent")
    finally:
        set_setting(editor, CHECKERBOARD_SETTING, True)
    return with_board, without_board


def checkerboard_faults(with_board: np.ndarray, without_board: np.ndarray) -> list[str]:
    """What is wrong with the previews of the picture of `write_checkerboard_picture`, whatever size the
    editor shows it at: turning the board off must change exactly the clear part (the picture's rectangle
    but its opaque middle), the board there shows two greys, without it one flat colour."""
    changed = np.abs(with_board - without_board).sum(-1) > 30
    if not changed.any():
        return ["turning the checkerboard off changed nothing"]
    rows, cols = np.nonzero(changed)
    top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    height, width = bottom - top, right - left
    faults = []
    if width < 100 or abs(width - height) > 3:
        faults.append(f"the changed pixels span {width} x {height}, not the square picture")
    expected = CLEAR_FRACTION * width * height
    if not 0.9 * expected < changed.sum() < 1.1 * expected:
        faults.append(f"turning the checkerboard off changed {changed.sum()} pixels, not the {expected:.0f} clear ones")
    middle = changed[top + height // 4 + 3: bottom - height // 4 - 3, left + width // 4 + 3: right - width // 4 - 3]
    if middle.any():
        faults.append(f"{middle.sum()} pixels of the opaque middle changed")
    greys = {tuple(c) for c in with_board[changed] if max(c) - min(c) < 8}
    if len({c[0] // 16 for c in greys}) < 2:
        faults.append(f"no two-grey checkerboard behind the picture: {list(greys)[:8]}")
    _, counts = np.unique(without_board[changed], axis=0, return_counts=True)
    if counts.max() <= 0.95 * changed.sum():
        faults.append("without the board, the clear background should be one flat colour")
    return faults
