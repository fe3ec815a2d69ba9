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
from support.servers import pause_others, sd15_setup, start_server

HERE = Path(__file__).resolve().parent


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
def session_server(tmp_path_factory, fixture_cache) -> LiveServer:
    base, layer_folder = sd15_setup(tmp_path_factory.mktemp, fixture_cache)
    server = start_server(base, layer_folder)
    yield LiveServer(server.url, base, layer_folder, server)
    server.stop()


@pytest.fixture(scope="module")
def live_server(session_server) -> LiveServer:
    """The session's SD1.5 server, started again (same port) if it was stopped when the tests left tests/e2e."""
    if not session_server.server.alive():
        session_server.server.start()
    return session_server


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Leaving tests/e2e: this session's servers stop, so that the in-process host tests that follow have
    the machine's memory (a CPU server keeps its freed models resident)."""
    if nextitem is None or HERE not in Path(nextitem.path).parents:
        pause_others()


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
