"""Sketch guidance over HTTP on the full-size random SD1.5 checkpoint: the shipped workflow, and bad inputs.

The guided run takes gradients through the host's real UNet inside the server's own execution (inference
mode, weights loaded by the host), so it fails loudly if that path breaks.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from comfyui_layer_sketch import queue_workflow as client
from PIL import Image
from support import fixtures
from support.fixtures import SD15_CHECKPOINT as CHECKPOINT

pytestmark = pytest.mark.e2e

WORKFLOW = Path(__file__).resolve().parents[2] / "workflows" / "api" / "sd15_sketch_guided.json"


def _put_sketch(live_server, name: str, pixels: np.ndarray) -> str:
    folder = live_server.base / "input"
    folder.mkdir(exist_ok=True)
    Image.fromarray(pixels).save(folder / name)
    return name


def _drawing(width: int = 128, height: int = 96) -> np.ndarray:
    """Dark strokes on light paper: a rectangle outline and a diagonal."""
    paper = np.full((height, width, 3), 235, np.uint8)
    paper[20:23, 16:112] = paper[70:73, 16:112] = 30
    paper[20:73, 16:19] = paper[20:73, 109:112] = 30
    for i in range(60):
        paper[25 + i // 2, 30 + i] = 60
    return paper


def _graph(live_server, sketch: str, strength: float, predictor: str = fixtures.SD15_PREDICTOR) -> dict:
    graph = client.load_workflow(WORKFLOW)
    for (node, field), value in {("1", "ckpt_name"): CHECKPOINT, ("4", "width"): 128, ("4", "height"): 96,
                                 ("5", "image"): sketch, ("6", "predictor_name"): predictor,
                                 ("7", "strength"): strength, ("7", "end_percent"): 1.0,
                                 ("8", "steps"): 2}.items():
        graph[node]["inputs"][field] = value
    return graph


def test_shipped_sketch_workflow_guides_the_full_size_model(live_server):
    sketch = _put_sketch(live_server, "e2e_sketch.png", _drawing())
    images = {}
    for strength in (1.6, 0.0):
        result = client.run(live_server.url, _graph(live_server, sketch, strength), timeout=900)
        assert result.ok, json.dumps(result.error, indent=1)
        [png] = client.output_paths(result, live_server.output_dir)
        images[strength] = np.asarray(Image.open(png).convert("RGB")).astype(int)
        assert images[strength].shape == (96, 128, 3)
        previews = [i for i in result.images() if i["type"] == "temp"]
        assert previews, "the edge map the guidance aims at is shown"
    assert np.abs(images[1.6] - images[0.0]).max() > 2, "guidance must change the image"


def test_sketch_guidance_with_dpmpp_2m_karras(live_server):
    """The sampler most shared graphs use: guidance changes the image, and the run completes."""
    sketch = _put_sketch(live_server, "e2e_sketch_dpmpp.png", _drawing())
    images = {}
    for strength in (1.6, 0.0):
        graph = _graph(live_server, sketch, strength)
        graph["8"]["inputs"].update(sampler_name="dpmpp_2m", scheduler="karras", steps=3)
        result = client.run(live_server.url, graph, timeout=900)
        assert result.ok, json.dumps(result.error, indent=1)
        [png] = client.output_paths(result, live_server.output_dir)
        images[strength] = np.asarray(Image.open(png).convert("RGB")).astype(int)
    assert np.abs(images[1.6] - images[0.0]).max() > 2, "guidance must change the image"


def test_shipped_training_workflow_saves_a_predictor_for_the_checkpoint(live_server, tmp_path):
    from comfyui_layer_sketch.sketch_guidance.predictor import load_predictor
    from support.sketches import write_image_folder

    folder = write_image_folder(tmp_path / "training_images", 3)
    graph = client.load_workflow(WORKFLOW.parent / "sd15_train_edge_predictor.json")
    for field, value in {"image_folder": str(folder), "steps": 2, "batch_size": 2, "resolution": 64,
                         "file_name": "e2e_trained"}.items():
        graph["2"]["inputs"][field] = value
    graph["1"]["inputs"]["ckpt_name"] = CHECKPOINT
    result = client.run(live_server.url, graph, timeout=900)
    assert result.ok, json.dumps(result.error, indent=1)
    saved = live_server.base / "models" / "edge_predictor" / "e2e_trained.safetensors"
    predictor = load_predictor(str(saved))
    assert (predictor.info.base, predictor.info.feature_channels, predictor.info.trained_steps) == ("SD1.5", 9280, 2)
    assert "e2e_trained.safetensors" in json.dumps(result.outputs["3"]), "the report is shown"


def test_sketch_guided_transparent_layer_with_controlnet_in_the_same_graph(live_server):
    """LayerDiffusion attention sharing + sketch guidance + ControlNet (Canny of the same sketch), one sampler."""
    graph = _graph(live_server, _put_sketch(live_server, "e2e_sketch.png", _drawing()), 1.6)
    graph.update({
        "20": {"class_type": "LayerDiffuseApply", "inputs": {"model": ["1", 0], "mode": "auto", "weight": 1.0}},
        "21": {"class_type": "Canny", "inputs": {"image": ["5", 0], "low_threshold": 0.4, "high_threshold": 0.8}},
        "22": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": fixtures.SD15_CONTROLNET}},
        "23": {"class_type": "ControlNetApplyAdvanced", "inputs": {
            "positive": ["2", 0], "negative": ["3", 0], "control_net": ["22", 0], "image": ["21", 0],
            "strength": 1.0, "start_percent": 0.0, "end_percent": 1.0}},
        "24": {"class_type": "LayerDiffuseDecode", "inputs": {
            "samples": ["8", 0], "images": ["9", 0], "sd_version": "auto", "augmentations": "1",
            "sub_batch_size": 8, "model": ["1", 0]}},
        "25": {"class_type": "SaveImage", "inputs": {"images": ["24", 0], "filename_prefix": "e2e/sketch_rgba"}},
    })
    graph["7"]["inputs"]["model"] = ["20", 0]
    graph["8"]["inputs"].update(positive=["23", 0], negative=["23", 1])
    result = client.run(live_server.url, graph, timeout=900)
    assert result.ok, json.dumps(result.error, indent=1)
    [rgba] = [p for p in client.output_paths(result, live_server.output_dir) if "sketch_rgba" in p.name]
    image = Image.open(rgba)
    assert image.mode == "RGBA" and image.size == (128, 96) and np.asarray(image)[..., 3].std() > 1.0
