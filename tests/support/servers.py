"""ComfyUI servers for tests over HTTP: throw-away base directories, the pack linked in, downloads offline."""

from __future__ import annotations

from pathlib import Path

import host_client
import hostenv
import torch
from host_server import ComfyServer, free_port

_RUNNING: list[ComfyServer] = []


def new_base_dir(tmp_path_factory, models: dict[str, dict[str, Path]]) -> Path:
    """A ComfyUI base directory with the pack in custom_nodes and {folder: {file name: fixture}} linked in."""
    base = tmp_path_factory.mktemp("comfy_base")
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / hostenv.PACK_LINK_NAME).symlink_to(hostenv.REPO, target_is_directory=True)
    for folder, files in models.items():
        (base / "models" / folder).mkdir(parents=True)
        for name, target in files.items():
            (base / "models" / folder / name).symlink_to(target)
    return base


def start_server(base: Path, layer_folder: Path, extra_args: tuple[str, ...] = ()) -> ComfyServer:
    """A server on `base` with `layer_folder` registered through an extra_model_paths.yaml, downloads offline.

    Servers of this session that are still running are asked to free their models first: only one
    full-size model set fits in a CI machine's memory at a time.
    """
    for running in _RUNNING:
        if running.alive():
            host_client.free_memory(running.url)
    yaml = base / "extra_model_paths.yaml"
    yaml.write_text(f"shared:\n  base_path: {layer_folder.parent}\n  layer_model: {layer_folder.name}\n")
    env = hostenv.host_environment()
    env["LAYER_SKETCH_WEIGHTS_URL"] = f"http://127.0.0.1:{free_port()}/offline"
    server = ComfyServer(hostenv.venv_python(), hostenv.COMFY_DIR, env=env, log_path=base / "server.log",
                         cpu=not torch.cuda.is_available(),
                         extra_args=["--base-directory", str(base), "--extra-model-paths-config", str(yaml),
                                     *extra_args])
    server.start()
    _RUNNING.append(server)
    return server
