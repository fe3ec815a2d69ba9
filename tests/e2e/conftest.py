"""A real ComfyUI server with the pack, in a throw-away base directory, for tests over HTTP.

Models reach it the way users' models do: the checkpoint through the base directory's
`models/checkpoints`, the LayerDiffusion files through an extra_model_paths.yaml `layer_model` entry.
Downloads point at a closed port on 127.0.0.1, so a missing file fails as it would offline.
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from host_server import ComfyServer
from support.servers import sd15_setup, start_server


@dataclass
class LiveServer:
    url: str
    base: Path
    layer_folder: Path  # the yaml-registered layer_model folder
    server: ComfyServer

    @property
    def output_dir(self) -> Path:
        return self.base / "output"


@pytest.fixture(scope="session")
def live_server(tmp_path_factory, fixture_cache) -> LiveServer:
    base, layer_folder = sd15_setup(tmp_path_factory.mktemp, fixture_cache)
    server = start_server(base, layer_folder)
    yield LiveServer(server.url, base, layer_folder, server)
    server.stop()


@pytest.fixture(scope="module")
def pack_nodes(live_server) -> dict[str, dict]:
    """The pack's nodes as the server lists them in /object_info."""
    with urllib.request.urlopen(f"{live_server.url}/object_info", timeout=60) as response:
        info = json.load(response)
    return {name: node for name, node in info.items() if node["python_module"].startswith("custom_nodes.")}


# The graph editor (browser tests): one browser and one editor page per test module.
@pytest.fixture(scope="module")
def chromium():
    from support import editor

    try:
        with editor.chromium() as browser:
            yield browser
    except FileNotFoundError as missing:
        pytest.fail(str(missing))


@pytest.fixture(scope="module")
def shared_view(chromium, live_server):
    from support import editor

    opened = editor.open_editor(chromium, live_server.url, 1600, 1000)
    yield opened
    opened.page.close()


@pytest.fixture
def view(shared_view):
    """The module's editor page; `view.since`: errors logged before this test."""
    return shared_view.fresh_start()
