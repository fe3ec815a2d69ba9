"""`python -m comfyui_layer_sketch.queue_workflow` as a script user runs it: plain Python (no torch), a live server."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from support.fixtures import SD15_CHECKPOINT as CHECKPOINT

pytestmark = pytest.mark.e2e

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows" / "api"


def _queue(live_server, *args: str) -> subprocess.CompletedProcess:
    python = shutil.which("python3") or sys.executable  # any Python: the client needs no host packages
    return subprocess.run([python, "-m", "comfyui_layer_sketch.queue_workflow", *args, "--server", live_server.url],
                          cwd=live_server.base / "custom_nodes", capture_output=True, text=True, timeout=900)


def test_queues_a_shipped_workflow_with_settings_and_downloads_the_result(live_server, tmp_path):
    result = _queue(live_server, str(WORKFLOWS / "sd15_transparent.json"), "--set", f"1.ckpt_name={CHECKPOINT}",
                    "--set", "EmptyLatentImage.width=64", "--set", "EmptyLatentImage.height=64",
                    "--set", "KSampler.steps=1", "--set", "Layer Diffuse Decode (RGBA).augmentations=\"1\"",
                    "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    [path] = result.stdout.split()
    assert Path(path).parent == tmp_path / "out" and Image.open(path).mode == "RGBA"
    assert Image.open(path).size == (64, 64)
    assert "KSampler" in result.stderr, "progress is shown"


def test_a_failing_workflow_exits_non_zero_with_the_hosts_message(live_server, tmp_path):
    graph = {"1": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
             "2": {"class_type": "EmptyImage", "inputs": {"width": 72, "height": 64, "batch_size": 1, "color": 0}},
             "3": {"class_type": "LayerDiffuseDecode", "inputs": {
                 "samples": ["1", 0], "images": ["2", 0], "sd_version": "SD1.5", "augmentations": "1",
                 "sub_batch_size": 8}},
             "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "e2e/q"}}}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(graph))
    failed = _queue(live_server, str(path))
    assert failed.returncode == 1 and "The latent is 8x8" in failed.stderr, failed.stderr
    refused = _queue(live_server, str(path), "--set", "1.width=7")
    assert refused.returncode == 2 and "width" in refused.stderr, refused.stderr
    typo = _queue(live_server, str(path), "--set", "Sampler.steps=3")
    assert typo.returncode == 2 and "No node 'Sampler'" in typo.stderr
    ui_format = _queue(live_server, str(WORKFLOWS.parent / "sd15_transparent.json"))
    assert ui_format.returncode == 2 and "API-format copy" in ui_format.stderr
