"""Build the graph editor's (UI-format) workflow from an API-format one and the server's /object_info.

The API-format files in `workflows/api/` are the source; the UI files in `workflows/` are generated
from them, so the two never drift apart (a test rebuilds and compares). A node's optional
`_meta.note` becomes a Note beside it in the editor; `_meta.title` its title.

    .host/venv/bin/python -P devtools/workflow_ui.py   # rewrites workflows/*.json from workflows/api/
"""

from __future__ import annotations

import json
from pathlib import Path

WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
COLUMN_WIDTH, ROW_GAP, NODE_WIDTH = 380, 40, 320


def _is_widget(spec: list) -> bool:
    kind = spec[0]
    return isinstance(kind, list) or kind in WIDGET_TYPES


def _inputs(info: dict) -> list[tuple[str, list]]:
    required = list(info["input"].get("required", {}).items())
    optional = list(info["input"].get("optional", {}).items())
    return required + optional


def _columns(graph: dict) -> dict[str, int]:
    """Column of each node: the length of the longest chain of links leading into it."""
    column: dict[str, int] = {}

    def depth(node_id: str) -> int:
        if node_id not in column:
            column[node_id] = 0  # guards against cycles
            sources = [v[0] for v in graph[node_id]["inputs"].values() if isinstance(v, list) and len(v) == 2]
            column[node_id] = max((depth(s) + 1 for s in sources), default=0)
        return column[node_id]

    for node_id in graph:
        depth(node_id)
    return column


def _widget_height(spec: list) -> int:
    options = spec[1] if len(spec) > 1 else {}
    return 110 if spec[0] == "STRING" and options.get("multiline") else 26


def _height(info: dict) -> int:
    rows = max(len(info["output"]), sum(1 for _, spec in _inputs(info) if not _is_widget(spec)))
    return 30 + 22 * rows + sum(_widget_height(spec) for _, spec in _inputs(info) if _is_widget(spec))


def build_ui(api: dict, object_info: dict) -> dict:
    """The UI-format graph (LiteGraph JSON, version 0.4) for an API-format graph."""
    ids = {node_id: index + 1 for index, node_id in enumerate(api)}
    columns = _columns(api)
    next_y: dict[int, float] = {}
    nodes, links = [], []
    outputs_links: dict[tuple[str, int], list[int]] = {}

    for node_id, node in api.items():
        info = object_info[node["class_type"]]
        inputs, widgets = [], []
        for name, spec in _inputs(info):
            value = node["inputs"].get(name)
            if _is_widget(spec):
                options = spec[1] if len(spec) > 1 else {}
                widgets.append(options.get("default") if value is None else value)
                if options.get("control_after_generate"):
                    widgets.append("fixed")
                continue
            link_id = None
            if isinstance(value, list):
                link_id = len(links) + 1
                source, slot = value
                source_type = object_info[api[source]["class_type"]]["output"][slot]
                links.append([link_id, ids[source], slot, ids[node_id], len(inputs), source_type])
                outputs_links.setdefault((source, slot), []).append(link_id)
            inputs.append({"name": name, "type": spec[0], "link": link_id})
        column = columns[node_id]
        note = node.get("_meta", {}).get("note")
        y = next_y.get(column, 0.0) + (130 if note else 0)
        entry = {
            "id": ids[node_id], "type": node["class_type"], "pos": [column * COLUMN_WIDTH, y],
            "size": [NODE_WIDTH, _height(info)], "flags": {}, "order": 0, "mode": 0,
            "inputs": inputs, "outputs": [], "properties": {"Node name for S&R": node["class_type"]},
            "widgets_values": widgets,
        }
        if "title" in node.get("_meta", {}):
            entry["title"] = node["_meta"]["title"]
        nodes.append(entry)
        if note:
            nodes.append({"id": 1000 + ids[node_id], "type": "Note", "pos": [column * COLUMN_WIDTH, y - 120],
                          "size": [NODE_WIDTH, 100], "flags": {}, "order": 0, "mode": 0, "inputs": [],
                          "outputs": [], "properties": {}, "widgets_values": [note],
                          "color": "#432", "bgcolor": "#653"})
        next_y[column] = y + _height(info) + ROW_GAP

    by_id = {n["id"]: n for n in nodes}
    for node_id, node in api.items():
        info = object_info[node["class_type"]]
        names = info.get("output_name") or info["output"]
        by_id[ids[node_id]]["outputs"] = [
            {"name": name, "type": kind, "links": outputs_links.get((node_id, slot), []), "slot_index": slot}
            for slot, (name, kind) in enumerate(zip(names, info["output"], strict=True))
        ]
    _set_execution_order(nodes, links)
    return {"last_node_id": max(by_id), "last_link_id": len(links), "nodes": nodes, "links": links,
            "groups": [], "config": {}, "extra": {"ds": {"scale": 0.8, "offset": [40, 160]}}, "version": 0.4}


def _set_execution_order(nodes: list[dict], links: list[list]) -> None:
    depth = {n["id"]: 0 for n in nodes}
    for _ in nodes:
        for _, source, _, target, _, _ in links:
            depth[target] = max(depth[target], depth[source] + 1)
    for order, node in enumerate(sorted(nodes, key=lambda n: (depth[n["id"]], n["id"]))):
        node["order"] = order


def api_inputs_without_meta(api: dict) -> dict:
    return {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in api.items()}


def main() -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import host_client
    import hostenv
    from host_server import ComfyServer

    hostenv.ensure_host()
    workflows = hostenv.REPO / "workflows"
    with ComfyServer(hostenv.venv_python(), hostenv.COMFY_DIR, env=hostenv.host_environment()) as server:
        object_info = host_client.get_json(server.url, "/object_info")
    for api_path in sorted((workflows / "api").glob("*.json")):
        ui = build_ui(json.loads(api_path.read_text()), object_info)
        (workflows / api_path.name).write_text(json.dumps(ui, indent=1) + "\n")
        print(f"wrote workflows/{api_path.name}")


if __name__ == "__main__":
    main()
