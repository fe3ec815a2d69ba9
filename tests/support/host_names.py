"""The host's top-level module names: what the pack imports when it imports ComfyUI (pure Python)."""

HOST_ROOTS = frozenset({"comfy", "comfy_extras", "comfy_execution", "comfy_api", "folder_paths", "nodes", "server",
                        "node_helpers", "latent_preview"})
