"""Write docs/NODES.md, the node reference (inputs, outputs, tooltips), from a live server's /object_info.

    .host/0.33.0/venv/bin/python -P devtools/node_reference.py

A test rebuilds it from the test server's /object_info and compares, so it never goes stale.
"""

from __future__ import annotations

PACK_MODULE = "comfyui_layer_sketch"
FILE_LISTS = {"predictor_name": "a file in `models/edge_predictor`",  # choices that depend on the user's files
              "codec": "`published`, `published (SDXL diffusers set)`, or a trained codec file in "
                       "`models/layer_model`",
              "vae_name": "`alphavae_flux1_rgba_vae.safetensors`, `flux2_klein_alpha_rgba_vae.safetensors`, or a "
                          "`.safetensors` file in `models/vae`",
              "lora_name": "`alphavae_flux1_lora.safetensors`, `flux2_klein_alpha_extract_4b.safetensors`, "
                           "`flux2_klein_alpha_extract_9b.safetensors`, `flux2_klein_alpha_remove_9b.safetensors`, "
                           "or a `.safetensors` file in `models/loras`"}
HEADER = ("# Node reference\n\nGenerated from the nodes' own definitions by `devtools/node_reference.py`; "
          "the same text appears as tooltips in the graph editor.\n")


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _input_rows(inputs: dict, optional: bool) -> list[str]:
    rows = []
    for name, spec in inputs.items():
        kind, options = spec[0], (spec[1] if len(spec) > 1 else {})
        if name in FILE_LISTS:
            kind = FILE_LISTS[name]
        elif isinstance(kind, list):
            kind = "choice: " + ", ".join(f"`{c}`" for c in kind)
        else:
            kind = f"`{kind}`"
        default = f"`{options['default']}`" if "default" in options else ""
        rows.append(f"| `{name}`{' (optional)' if optional else ''} | {_cell(kind)} | {_cell(default)} | "
                    f"{_cell(options.get('tooltip', ''))} |")
    return rows


def render(object_info: dict) -> str:
    nodes = sorted((info for info in object_info.values() if PACK_MODULE in info.get("python_module", "")),
                   key=lambda info: (info["category"], info["display_name"]))
    parts = [HEADER]
    for info in nodes:
        parts.append(f"\n## {info['display_name']} — `{info['name']}`\n\nCategory `{info['category']}`. "
                     f"{_cell(info.get('description', ''))}\n")
        parts.append("\n| input | type | default | what it is |\n|---|---|---|---|")
        parts += _input_rows(info["input"].get("required", {}), False)
        parts += _input_rows(info["input"].get("optional", {}), True)
        if info["output"]:
            parts.append("\n| output | type | what it is |\n|---|---|---|")
            tooltips = info.get("output_tooltips") or [""] * len(info["output"])
            for name, kind, tip in zip(info["output_name"], info["output"], tooltips, strict=True):
                parts.append(f"| `{name}` | `{kind}` | {_cell(tip)} |")
        else:
            parts.append("\nNo outputs: it saves files (shown in the UI).")
    return "\n".join(parts) + "\n"


def main() -> None:
    import hostenv
    import hostimport
    from host_server import ComfyServer

    hostenv.ensure_host()
    with ComfyServer(hostenv.venv_python(), hostenv.COMFY_DIR, env=hostenv.host_environment()) as server:
        object_info = hostimport.queue_client().get_json(server.url, "/object_info")
    target = hostenv.REPO / "docs" / "NODES.md"
    target.parent.mkdir(exist_ok=True)
    target.write_text(render(object_info))
    print(f"wrote {target.relative_to(hostenv.REPO)}")


if __name__ == "__main__":
    main()
