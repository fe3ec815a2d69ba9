"""Every shipped workflow fits the live server's node definitions, on every supported host.

The UI files follow the newest host's node definitions (they are generated there from their API copies,
and checked for staleness there); on every host they must load as intended (`workflow_ui.ui_problems`).
"""

from __future__ import annotations

import json
from pathlib import Path

import hostenv
import pytest
from comfyui_layer_sketch import queue_workflow as client
from support.workflow_hosts import NEEDS_HOST, fits_this_host
from workflow_ui import api_inputs_without_meta, build_ui, ui_problems, value_problem

pytestmark = [pytest.mark.e2e, pytest.mark.host, pytest.mark.contract]

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
ALL_API_FILES = sorted((WORKFLOWS / "api").glob("*.json"))
PYTHON = f".host/{hostenv.NEWEST.version}/venv/bin/python"
API_FILES = [path for path in ALL_API_FILES if fits_this_host(path)]
OLDER_HOST_FILES = [path for path in ALL_API_FILES if not fits_this_host(path)]


@pytest.fixture(scope="module")
def object_info(live_server) -> dict:
    return client.get_json(live_server.url, "/object_info")


def test_there_are_shipped_workflows_with_ui_copies():
    assert API_FILES, "workflows/api/ must hold the API-format workflows"
    for path in ALL_API_FILES:
        assert (WORKFLOWS / path.name).is_file(), f"workflows/{path.name} (UI format) is missing"


@pytest.mark.parametrize("path", API_FILES, ids=[p.name for p in API_FILES])
def test_api_workflow_matches_node_definitions(object_info, path):
    graph = client.load_workflow(path)
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
                problem = value_problem(name, known[name], value)
                assert problem is None, f"{where}: {problem}"


@pytest.mark.parametrize("path", API_FILES, ids=[p.name for p in API_FILES])
def test_ui_workflow_loads_as_intended_on_this_host(object_info, path):
    problems = ui_problems(json.loads((WORKFLOWS / path.name).read_text()), object_info)
    assert not problems, f"workflows/{path.name} on ComfyUI {hostenv.HOST.version}:\n" + "\n".join(problems)


@pytest.mark.parametrize("path", OLDER_HOST_FILES, ids=[p.name for p in OLDER_HOST_FILES])
def test_workflows_for_newer_hosts_do_not_fit_here_and_the_readme_says_so(object_info, path):
    """Keeps NEEDS_HOST true: such a workflow does not load on this host, and the README names its first host."""
    assert ui_problems(json.loads((WORKFLOWS / path.name).read_text()), object_info), \
        f"{path.name} fits ComfyUI {hostenv.HOST.version} now: drop it from NEEDS_HOST"
    readme = (WORKFLOWS.parent / "README.md").read_text()
    assert f"`{path.stem}` needs ComfyUI {NEEDS_HOST[path.name]} or newer" in readme


def test_workflow_host_floors_name_shipped_workflows_and_supported_hosts():
    assert set(NEEDS_HOST) <= {path.name for path in ALL_API_FILES}
    assert set(NEEDS_HOST.values()) <= {host.version for host in hostenv.HOSTS}


@pytest.mark.newest_host  # the UI files are generated on the newest host
@pytest.mark.parametrize("path", API_FILES, ids=[p.name for p in API_FILES])
def test_ui_workflow_is_generated_from_its_api_copy(object_info, path):
    api = json.loads(path.read_text())
    shipped = json.loads((WORKFLOWS / path.name).read_text())
    assert shipped == build_ui(api, object_info), \
        f"workflows/{path.name} is stale: run `{PYTHON} -P devtools/workflow_ui.py`"
    assert api_inputs_without_meta(api) == api_inputs_without_meta(client.load_workflow(path))


def test_node_reference_is_generated_from_the_node_definitions(object_info):
    from node_reference import render

    shipped = (WORKFLOWS.parent / "docs" / "NODES.md").read_text()
    assert shipped == render(object_info), \
        f"docs/NODES.md is stale: run `{PYTHON} -P devtools/node_reference.py`"
