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

# The editor's geometry (LiteGraph in ComfyUI's frontend): the title bar sits above a node's `pos`,
# each slot row is 20 px, each widget 24 px. Text widths are estimated generously (7 px a character);
# the browser test checks the result against the editor's own sizes and for overlaps.
TITLE_HEIGHT, SLOT_HEIGHT, WIDGET_HEIGHT, CHAR_WIDTH = 30, 20, 24, 7
MIN_NODE_WIDTH, COLUMN_GAP, ROW_GAP = 320, 70, 40
TEXTBOX_HEIGHT, IMAGE_PREVIEW_HEIGHT = 110, 260
NOTE_CHARS_PER_LINE, NOTE_LINE_HEIGHT, NOTE_MIN_HEIGHT = 44, 16, 90  # the editor grows a Note to 88 px


def is_widget(spec: list) -> bool:
    """Whether the editor shows this input as a widget (a value) rather than a link socket."""
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


def _shows_images(info: dict) -> bool:
    """Output nodes and image loaders grow an image preview in the editor."""
    uploads = any(len(spec) > 1 and isinstance(spec[1], dict) and spec[1].get("image_upload")
                  for _, spec in _inputs(info))
    return bool(info.get("output_node")) or uploads


def _size(info: dict, title: str, widget_values: list[tuple[str, object]]) -> list[int]:
    """[width, height] the editor needs; `widget_values` are (input name, value) of the widgets."""
    widgets = [spec for _, spec in _inputs(info) if is_widget(spec)]
    slots = [name for name, spec in _inputs(info) if not is_widget(spec)]
    outputs = info.get("output_name") or info["output"]
    rows = max(len(outputs), len(slots))
    textboxes = sum(1 for spec in widgets if spec[0] == "STRING" and len(spec) > 1 and spec[1].get("multiline"))
    height = SLOT_HEIGHT * rows + WIDGET_HEIGHT * (len(widgets) - textboxes) + TEXTBOX_HEIGHT * textboxes
    height += 14 if widgets else 6
    if _shows_images(info):
        height += IMAGE_PREVIEW_HEIGHT
    texts = [len(title) + 4]
    texts += [len(a) + len(b) + 4 for a, b in zip(slots, outputs, strict=False)]
    texts += [len(name) + len(str(value)) + 6 for name, value in widget_values]
    return [max(MIN_NODE_WIDTH, CHAR_WIDTH * max(texts) + 40), height]


def _note_height(text: str) -> int:
    lines = sum(max(1, -(-len(line) // NOTE_CHARS_PER_LINE)) for line in text.splitlines() or [""])
    return max(NOTE_MIN_HEIGHT, 24 + NOTE_LINE_HEIGHT * lines)


def _node_entries(api: dict, object_info: dict, ids: dict[str, int]) -> tuple[dict[str, dict], list[list]]:
    """Nodes without positions, and the links between them."""
    entries: dict[str, dict] = {}
    links: list[list] = []
    outputs_links: dict[tuple[str, int], list[int]] = {}
    for node_id, node in api.items():
        info = object_info[node["class_type"]]
        inputs, widgets, widget_values = [], [], []
        for name, spec in _inputs(info):
            value = node["inputs"].get(name)
            if is_widget(spec):
                options = spec[1] if len(spec) > 1 else {}
                widgets.append(options.get("default") if value is None else value)
                widget_values.append((name, widgets[-1]))
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
        title = node.get("_meta", {}).get("title") or info.get("display_name") or node["class_type"]
        entry = {
            "id": ids[node_id], "type": node["class_type"], "pos": [0, 0],
            "size": _size(info, title, widget_values),
            "flags": {}, "order": 0, "mode": 0, "inputs": inputs, "outputs": [],
            "properties": {"Node name for S&R": node["class_type"]}, "widgets_values": widgets,
        }
        if "title" in node.get("_meta", {}):
            entry["title"] = node["_meta"]["title"]
        entries[node_id] = entry
    for node_id, node in api.items():
        info = object_info[node["class_type"]]
        names = info.get("output_name") or info["output"]
        entries[node_id]["outputs"] = [
            {"name": name, "type": kind, "links": outputs_links.get((node_id, slot), []), "slot_index": slot}
            for slot, (name, kind) in enumerate(zip(names, info["output"], strict=True))
        ]
    return entries, links


def _note(node_id: int, text: str, width: int) -> dict:
    return {"id": 1000 + node_id, "type": "Note", "pos": [0, 0], "size": [width, _note_height(text)], "flags": {},
            "order": 0, "mode": 0, "inputs": [], "outputs": [], "properties": {}, "widgets_values": [text],
            "color": "#432", "bgcolor": "#653"}


def _place(api: dict, entries: dict[str, dict]) -> list[dict]:
    """Columns by link depth, each as wide as its widest node; notes above their nodes; no overlaps."""
    columns = _columns(api)
    widths = {c: max(entries[n]["size"][0] for n in api if columns[n] == c) for c in set(columns.values())}
    x_of = {0: 0}
    for column in range(1, max(widths) + 1):
        x_of[column] = x_of[column - 1] + widths.get(column - 1, MIN_NODE_WIDTH) + COLUMN_GAP
    next_top = dict.fromkeys(widths, 0)
    placed = []
    for node_id, node in api.items():
        column, entry = columns[node_id], entries[node_id]
        entry["size"][0] = widths[column]
        note = node.get("_meta", {}).get("note")
        if note:
            note_entry = _note(entry["id"], note, widths[column])
            note_entry["pos"] = [x_of[column], next_top[column] + TITLE_HEIGHT]
            next_top[column] += TITLE_HEIGHT + note_entry["size"][1] + 36  # room for the node's badge
            placed.append(note_entry)
        entry["pos"] = [x_of[column], next_top[column] + TITLE_HEIGHT]
        next_top[column] += TITLE_HEIGHT + entry["size"][1] + ROW_GAP
        placed.append(entry)
    return placed


def _view(nodes: list[dict]) -> dict:
    """Open framed: the whole graph in a 1600x900 window where it fits, never below 60 % zoom, clear of the
    editor's side bar (70 px) and top bars (130 px). The editor maps graph to screen as (pos + offset) * scale."""
    right = max(n["pos"][0] + n["size"][0] for n in nodes)
    bottom = max(n["pos"][1] + n["size"][1] for n in nodes)
    scale = round(max(0.6, min(1.0, 1500 / (right + 40), 740 / (bottom + 40))), 2)
    return {"scale": scale, "offset": [round(70 / scale), round(130 / scale)]}


def build_ui(api: dict, object_info: dict) -> dict:
    """The UI-format graph (LiteGraph JSON, version 0.4) for an API-format graph."""
    ids = {node_id: index + 1 for index, node_id in enumerate(api)}
    entries, links = _node_entries(api, object_info, ids)
    nodes = _place(api, entries)
    _set_execution_order(nodes, links)
    return {"last_node_id": max(n["id"] for n in nodes), "last_link_id": len(links), "nodes": nodes,
            "links": links, "groups": [], "config": {}, "extra": {"ds": _view(nodes)}, "version": 0.4}


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
