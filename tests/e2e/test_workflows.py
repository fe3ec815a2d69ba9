"""Every shipped workflow fits the live server's node definitions, and its UI file matches its API copy."""

from __future__ import annotations

import json
from pathlib import Path

import host_client
import pytest
from workflow_ui import api_inputs_without_meta, build_ui

pytestmark = pytest.mark.e2e

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
API_FILES = sorted((WORKFLOWS / "api").glob("*.json"))
MODEL_FILE_INPUTS = {"ckpt_name", "vae_name", "lora_name", "control_net_name", "image", "predictor_name"}  # user files


@pytest.fixture(scope="module")
def object_info(live_server) -> dict:
    return host_client.get_json(live_server.url, "/object_info")


def test_there_are_shipped_workflows_with_ui_copies():
    assert API_FILES, "workflows/api/ must hold the API-format workflows"
    for path in API_FILES:
        assert (WORKFLOWS / path.name).is_file(), f"workflows/{path.name} (UI format) is missing"


def _check_value(where: str, name: str, spec: list, value) -> None:
    kind, options = spec[0], (spec[1] if len(spec) > 1 else {})
    choices = kind if isinstance(kind, list) else options.get("options") if kind == "COMBO" else None
    if choices is not None:
        assert name in MODEL_FILE_INPUTS or value in choices, f"{where}: {value!r} is not one of {choices}"
    elif kind in ("INT", "FLOAT"):
        assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{where}: {value!r} is no number"
        assert options.get("min", value) <= value <= options.get("max", value), f"{where}: {value} out of range"
    elif kind == "STRING":
        assert isinstance(value, str), f"{where}: {value!r} is no string"


@pytest.mark.parametrize("path", API_FILES, ids=[p.name for p in API_FILES])
def test_api_workflow_matches_node_definitions(object_info, path):
    graph = host_client.load_api_workflow(path)
    for node_id, node in graph.items():
        assert node["class_type"] in object_info, f"{path.name}: unknown node {node['class_type']}"
        info = object_info[node["class_type"]]
        required = info["input"].get("required", {})
        known = {**required, **info["input"].get("optional", {})}
        assert set(required) <= set(node["inputs"]), f"{path.name} node {node_id}: missing required inputs"
        for name, value in node["inputs"].items():
            where = f"{path.name} node {node_id} ({node['class_type']}).{name}"
            assert name in known, f"{where}: no such input"
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                source = graph[value[0]]
                produced = object_info[source["class_type"]]["output"][value[1]]
                assert produced == known[name][0] or "*" in (produced, known[name][0]), f"{where}: type mismatch"
            else:
                _check_value(where, name, known[name], value)


@pytest.mark.parametrize("path", API_FILES, ids=[p.name for p in API_FILES])
def test_ui_workflow_is_generated_from_its_api_copy(object_info, path):
    api = json.loads(path.read_text())
    shipped = json.loads((WORKFLOWS / path.name).read_text())
    assert shipped == build_ui(api, object_info), \
        f"workflows/{path.name} is stale: run `.host/venv/bin/python -P devtools/workflow_ui.py`"
    assert api_inputs_without_meta(api) == api_inputs_without_meta(host_client.load_api_workflow(path))


def test_node_reference_is_generated_from_the_node_definitions(object_info):
    from node_reference import render

    shipped = (WORKFLOWS.parent / "docs" / "NODES.md").read_text()
    assert shipped == render(object_info), \
        "docs/NODES.md is stale: run `.host/venv/bin/python -P devtools/node_reference.py`"
