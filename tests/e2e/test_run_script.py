"""The README's main-job command: `python3 run.py` serving, and queueing a workflow headless."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

import hostenv
import pytest
from comfyui_layer_sketch import queue_workflow as client
from host_server import free_port
from PIL import Image
from support import fixtures
from support.fixtures import SD15_CHECKPOINT

pytestmark = pytest.mark.e2e

RUN = [sys.executable, str(hostenv.REPO / "run.py")]


def _workflow(tmp_path: Path) -> Path:
    graph = client.load_workflow(hostenv.REPO / "workflows" / "api" / "sd15_transparent.json")
    graph["1"]["inputs"]["ckpt_name"] = SD15_CHECKPOINT
    graph["4"]["inputs"].update(width=64, height=64)
    graph["5"]["inputs"].update(steps=1, seed=7)
    path = tmp_path / "workflow.json"
    path.write_text(json.dumps(graph))
    return path


def test_queue_headless_on_a_running_server_downloads_the_rgba_png(live_server, tmp_path):
    out = tmp_path / "out"
    done = subprocess.run([*RUN, str(_workflow(tmp_path)), "--server", live_server.url, "--out", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    [png] = [Path(line) for line in done.stdout.splitlines() if line.endswith(".png")]
    assert png.parent == out and Image.open(png).mode == "RGBA"


def test_failing_workflow_exits_non_zero_with_the_host_message(live_server, tmp_path):
    graph = client.load_workflow(_workflow(tmp_path))
    del graph["7"]["inputs"]["model"]  # sd_version stays 'auto'
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(graph))
    done = subprocess.run([*RUN, str(path), "--server", live_server.url], capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 1
    assert "LayerDiffuseDecode" in done.stderr and "no MODEL is connected" in done.stderr


def test_missing_checkpoint_is_refused_with_a_hint_where_models_go(live_server, tmp_path):
    graph = client.load_workflow(_workflow(tmp_path))
    graph["1"]["inputs"]["ckpt_name"] = "sd_xl_base_1.0.safetensors"
    path = tmp_path / "missing_checkpoint.json"
    path.write_text(json.dumps(graph))
    done = subprocess.run([*RUN, str(path), "--server", live_server.url], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2, done.stderr
    assert "ckpt_name: 'sd_xl_base_1.0.safetensors' not in" in done.stderr
    assert "Hint: ckpt_name names a file the server does not have" in done.stderr
    assert "models/checkpoints/" in done.stderr and "--models DIR" in done.stderr, done.stderr


def test_ui_format_file_is_refused_with_a_pointer_to_the_api_copy(tmp_path):
    done = subprocess.run([*RUN, str(hostenv.REPO / "workflows" / "sd15_transparent.json")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "UI-format workflow" in done.stderr and "workflows/api/" in done.stderr


def test_serve_starts_comfyui_with_the_pack_and_the_users_models(tmp_path, fixture_cache):
    models = tmp_path / "my_models"
    (models / "layer_model").mkdir(parents=True)
    decoder = models / "layer_model" / "layer_sd15_vae_transparent_decoder.safetensors"
    decoder.symlink_to(fixtures.decoder_file(fixture_cache))
    port = free_port()
    process = subprocess.Popen([*RUN, "--port", str(port), "--models", str(models)], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        deadline = time.time() + 300
        while time.time() < deadline and not any("is running at" in line for line in lines):
            lines.append(process.stdout.readline())
            assert process.poll() is None, "".join(lines)
        url = f"http://127.0.0.1:{port}"
        assert any(url in line for line in lines), "".join(lines)
        assert "LayerDiffuseDecode" in client.get_json(url, "/object_info/LayerDiffuseDecode")
        assert decoder.name in client.get_json(url, "/models/layer_model")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    with pytest.raises((urllib.error.URLError, OSError)):
        client.get_json(f"http://127.0.0.1:{port}", "/system_stats")  # the ComfyUI child is gone too
