"""Build the graph editor's (UI-format) workflow from an API-format one and the server's /object_info.

The API-format files in `workflows/api/` are the source; the UI files in `workflows/` are generated
from them, so the two never drift apart (a test rebuilds and compares). A node's optional
`_meta.note` becomes a Note beside it in the editor; `_meta.title` its title.

    .host/0.30.0/venv/bin/python -P devtools/workflow_ui.py   # rewrites workflows/*.json from workflows/api/
"""

from __future__ import annotations

import json

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


def has_seed_control(name: str, spec: list) -> bool:
    """Whether the editor adds a 'control after generate' widget after this one: where the node asks for it, and
    for an INT named seed or noise_seed that does not say otherwise (every supported editor does so)."""
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if options.get("control_after_generate") is not None:
        return bool(options["control_after_generate"])
    return spec[0] == "INT" and name in ("seed", "noise_seed")


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
            linked = isinstance(value, list)
            if is_widget(spec):
                options = spec[1] if len(spec) > 1 else {}
                # A widget fed by a link keeps its place (the editor shows it as a socket) with its default.
                default = options.get("default", 0 if spec[0] in ("INT", "FLOAT") else None)  # as the editor
                widgets.append(default if value is None or linked else value)
                widget_values.append((name, widgets[-1]))
                if has_seed_control(name, spec):
                    widgets.append("fixed")
                if not linked:
                    continue
            link_id = None
            if linked:
                link_id = len(links) + 1
                source, slot = value
                source_type = object_info[api[source]["class_type"]]["output"][slot]
                links.append([link_id, ids[source], slot, ids[node_id], len(inputs), source_type])
                outputs_links.setdefault((source, slot), []).append(link_id)
            entry = {"name": name, "type": spec[0] if not isinstance(spec[0], list) else "COMBO", "link": link_id}
            if is_widget(spec):
                entry["widget"] = {"name": name}
            inputs.append(entry)
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


EDITOR_ONLY_NODES = {"Note", "MarkdownNote"}  # drawn by the editor, unknown to the server
SEED_CONTROLS = {"fixed", "increment", "decrement", "randomize"}


def ui_problems(ui: dict, object_info: dict) -> list[str]:
    """What would stop this host's editor from loading the UI workflow as intended; [] when nothing.

    Checked against the host's current node definitions, not against a generated copy, so the same file
    can be judged on every supported host: every widget value sits where the node's inputs put it and
    fits its input, links join existing slots of matching types. Output slots the file has and the host's
    node lacks are fine while unlinked (a newer host added them: SaveImage's IMAGE output since 0.30).
    """
    nodes = {node["id"]: node for node in ui["nodes"]}
    problems = []
    for node in ui["nodes"]:
        if node["type"] not in EDITOR_ONLY_NODES:
            problems += _node_problems(node, object_info)
    for link in ui["links"]:
        problems += _link_problems(link, nodes, object_info)
    return problems


def _node_problems(node: dict, object_info: dict) -> list[str]:
    where = f"node {node['id']} ({node['type']})"
    if node["type"] not in object_info:
        return [f"{where}: the server has no such node"]
    info = object_info[node["type"]]
    fed = {slot["name"] for slot in node.get("inputs", []) if slot.get("widget") and slot.get("link") is not None}
    problems = _widget_problems(where, info, node.get("widgets_values", []), fed)
    known = dict(_inputs(info))
    for slot in node.get("inputs", []):
        spec = known.get(slot["name"])
        if spec is None:
            problems.append(f"{where}: input {slot['name']!r} does not exist")
        elif not _types_match(slot["type"], spec[0]):
            problems.append(f"{where}: input {slot['name']!r} is {spec[0]}, the file says {slot['type']}")
    linked = {slot["name"] for slot in node.get("inputs", []) if slot.get("link") is not None}
    for name, spec in info["input"].get("required", {}).items():
        if not is_widget(spec) and name not in linked:
            problems.append(f"{where}: required input {name!r} is not connected")
    host_outputs = info["output"]
    for index, slot in enumerate(node.get("outputs", [])):
        if slot.get("links") and (index >= len(host_outputs) or not _types_match(slot["type"], host_outputs[index])):
            problems.append(f"{where}: output {index} ({slot['type']}) is linked but the node has no such output")
    return problems


def _widget_problems(where: str, info: dict, values: list, fed: set[str]) -> list[str]:
    """Widget values in the places the node's inputs give them; those of widgets fed by a link are not used."""
    expected: list[tuple[str, list | None]] = []
    for name, spec in _inputs(info):
        if is_widget(spec):
            expected.append((name, spec))
            if has_seed_control(name, spec):
                expected.append((f"{name} (control after generate)", None))
    if len(values) != len(expected):
        return [f"{where}: {len(values)} widget values, the node's inputs need {len(expected)} "
                f"({', '.join(name for name, _ in expected)})"]
    problems = []
    for (name, spec), value in zip(expected, values, strict=True):
        if name in fed:
            continue
        problem = _seed_control_problem(value) if spec is None else value_problem(name, spec, value)
        if problem:
            problems.append(f"{where}.{name}: {problem}")
    return problems


def _seed_control_problem(value) -> str | None:
    return None if value in SEED_CONTROLS else f"{value!r} is not one of {sorted(SEED_CONTROLS)}"


# Inputs naming the user's own files: any name is fine in a shipped workflow.
USER_FILE_INPUTS = {"ckpt_name", "unet_name", "clip_name", "clip_name1", "clip_name2", "vae_name", "lora_name",
                    "control_net_name", "image", "predictor_name"}


def value_problem(name: str, spec: list, value) -> str | None:
    """Why `value` does not fit the input `spec` (an /object_info input entry), or None."""
    kind, options = spec[0], (spec[1] if len(spec) > 1 else {})
    choices = kind if isinstance(kind, list) else options.get("options") if kind == "COMBO" else None
    if choices is not None:
        return None if name in USER_FILE_INPUTS or value in choices else f"{value!r} is not one of {choices}"
    if kind in ("INT", "FLOAT"):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return f"{value!r} is not a number"
        if not options.get("min", value) <= value <= options.get("max", value):
            return f"{value} is outside [{options.get('min')}, {options.get('max')}]"
    if kind == "STRING" and not isinstance(value, str):
        return f"{value!r} is not text"
    if kind == "BOOLEAN" and not isinstance(value, bool):
        return f"{value!r} is not true/false"
    return None


def _types_match(a: str, b) -> bool:
    if isinstance(b, list):  # a combo input
        b = "COMBO"
    return a == b or "*" in (a, b)


def _link_problems(link: list, nodes: dict[int, dict], object_info: dict) -> list[str]:
    link_id, source, source_slot, target, target_slot, kind = link
    where = f"link {link_id}"
    if source not in nodes or target not in nodes:
        return [f"{where}: joins a node that is not in the workflow"]
    outputs, inputs = nodes[source].get("outputs", []), nodes[target].get("inputs", [])
    if source_slot >= len(outputs) or link_id not in (outputs[source_slot].get("links") or []):
        return [f"{where}: node {source} output {source_slot} does not list it"]
    if target_slot >= len(inputs) or inputs[target_slot].get("link") != link_id:
        return [f"{where}: node {target} input {target_slot} does not list it"]
    host_outputs = object_info.get(nodes[source]["type"], {}).get("output", [])
    if source_slot >= len(host_outputs) or not _types_match(kind, host_outputs[source_slot]):
        return [f"{where}: {nodes[source]['type']} has no {kind} output {source_slot} on this host"]
    return []


def api_inputs_without_meta(api: dict) -> dict:
    return {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in api.items()}


def main() -> None:
    import hostenv
    import hostimport
    from host_server import ComfyServer

    hostenv.ensure_host()
    workflows = hostenv.REPO / "workflows"
    with ComfyServer(hostenv.venv_python(), hostenv.COMFY_DIR, env=hostenv.host_environment()) as server:
        object_info = hostimport.queue_client().get_json(server.url, "/object_info")
    for api_path in sorted((workflows / "api").glob("*.json")):
        ui = build_ui(json.loads(api_path.read_text()), object_info)
        (workflows / api_path.name).write_text(json.dumps(ui, indent=1) + "\n")
        print(f"wrote workflows/{api_path.name}")


if __name__ == "__main__":
    main()
