"""The pack in the graph editor of the oldest supported host (run there by `run.py --test`): it loads with
the pack's nodes and no console error of its own, a shipped workflow opens cleanly from the template
browser, and previews show transparency on the pack's checkerboard. The same helpers as the full browser
test (`support/editor.py`, where what differs between editor versions lives); on the newest host's
editor that test covers all of this, so this module is marked to run on older editors only. Screenshots go to
`.test-artifacts/editor/<editor version>/`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from comfyui_layer_sketch import NODE_CLASS_MAPPINGS
from PIL import Image
from support import checkerboard, editor

pytestmark = [pytest.mark.e2e, pytest.mark.host, pytest.mark.older_editor]

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / "workflows" / "sd15_transparent.json"


def test_editor_loads_with_the_pack_nodes_and_no_errors_of_its_own(chromium, live_server, pack_nodes, tmp_path):
    baseline, _ = editor.plain_start_up_report(chromium, tmp_path)
    errors, types = editor.start_up_report(chromium, live_server.url)
    new_errors = [error for error in errors if error not in baseline]
    assert not new_errors, f"console errors with the pack that the plain editor does not show: {new_errors}"
    assert set(pack_nodes) == set(NODE_CLASS_MAPPINGS) and set(pack_nodes) <= set(types), \
        set(pack_nodes) ^ set(NODE_CLASS_MAPPINGS) | set(pack_nodes) - set(types)
    assert {types[n] for n in pack_nodes} == editor.PACK_CATEGORIES


def test_a_shipped_workflow_opens_cleanly_from_the_template_browser(view):
    editor.load_template(view, WORKFLOW.stem)
    view.screenshot(f"smoke_{WORKFLOW.stem}")
    report = editor.layout_report(view, editor.MODEL_INPUTS)
    assert sorted(report["types"]) == sorted(node["type"] for node in json.loads(WORKFLOW.read_text())["nodes"])
    assert not report["unknown"] and not report["invalid"] and not report["overlaps"], report
    assert not report["cramped"], report["cramped"]
    assert not editor.problems(view, editor.MODEL_INPUTS), editor.problems(view, editor.MODEL_INPUTS)
    assert not view.new_errors(view.since), view.new_errors(view.since)


def test_previews_show_transparency_on_a_checkerboard(view, live_server):
    checkerboard.write_checkerboard_picture(live_server.base / "input")
    checkerboard.preview_transparent_picture(view)
    with_board, without_board = checkerboard.checkerboard_pictures(view)
    Image.fromarray(with_board.astype(np.uint8)).save(editor.artifacts_dir() / "smoke_checkerboard.png")
    faults = checkerboard.checkerboard_faults(with_board, without_board)
    assert not faults, faults
    assert not view.new_errors(view.since), view.new_errors(view.since)
