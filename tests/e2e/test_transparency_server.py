"""What a user sees over HTTP: registered nodes, a shipped workflow writing an RGBA PNG, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from comfyui_layer_sketch import queue_workflow as client
from PIL import Image
from support import fixtures
from support.fixtures import SD15_CHECKPOINT as CHECKPOINT
from support.graphs import patched_sampling_graph
from workflow_ui import is_widget

pytestmark = pytest.mark.e2e

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
PACK_NODES = ("LayerDiffuseDecode", "LayerDiffuseDecodeSplit", "LayerDiffuseEncode", "LayerDiffuseApply",
              "LayerDiffuseJointApply", "LayerDiffuseCondJointApply", "LayerDiffuseCondApply", "LayerDiffuseDiffApply",
              "LayerDiffuseComposite", "LayerDiffuseSaveLayers", "SketchGuidanceLoadPredictor", "SketchGuidanceApply",
              "SketchGuidanceTrainPredictor", "SketchToEdgeMap")


FILE_CHOICES = {"predictor_name"}  # lists the user's files: the first one found is the default


def test_every_pack_node_is_registered_with_tooltips(live_server):
    info = client.get_json(live_server.url, "/object_info")
    ours = {name: node for name, node in info.items() if "comfyui_layer_sketch" in node["python_module"]}
    assert set(PACK_NODES) <= set(ours), f"missing: {set(PACK_NODES) - set(ours)}"
    for node_id, node in ours.items():
        assert node["category"].startswith(("layer_diffuse", "sketch_guidance")), node_id
        assert node["description"], f"{node_id} has no description"
        inputs = {**node["input"]["required"], **node["input"].get("optional", {})}
        for name, spec in inputs.items():
            assert len(spec) > 1 and spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"
            if is_widget(spec) and name not in FILE_CHOICES:
                assert "default" in spec[1], f"{node_id}.{name} has no default"
        tooltips = node.get("output_tooltips", [])
        assert len(tooltips) == len(node["output"]) and all(tooltips), node_id


def test_layer_model_folder_from_yaml_is_listed(live_server):
    files = client.get_json(live_server.url, "/models/layer_model")
    assert "layer_sd15_vae_transparent_decoder.safetensors" in files


def _shipped(name: str, overrides: dict[tuple[str, str], object]) -> dict:
    graph = client.load_workflow(WORKFLOWS / "api" / name)
    for (node, field), value in overrides.items():
        graph[node]["inputs"][field] = value
    return graph


def _transparent_png(live_server, weight: float, attention_guidance: bool = False) -> np.ndarray:
    graph = _shipped("sd15_transparent.json", {
        ("1", "ckpt_name"): CHECKPOINT, ("4", "width"): 128, ("4", "height"): 96, ("5", "steps"): 2,
        ("10", "weight"): weight,
    })
    if attention_guidance:  # the host's Perturbed-Attention Guidance between LayerDiffusion and the sampler
        graph["11"] = {"class_type": "PerturbedAttentionGuidance", "inputs": {"model": ["10", 0], "scale": 3.0}}
        graph["5"]["inputs"]["model"] = ["11", 0]
    result = client.run(live_server.url, graph, timeout=900)
    assert result.ok, json.dumps(result.error, indent=1)
    [png] = client.output_paths(result, live_server.output_dir)
    image = Image.open(png)
    assert image.mode == "RGBA" and image.size == (128, 96)
    assert [i for i in result.images() if i["type"] == "temp"], "the checkerboard preview is shown in the UI"
    return np.asarray(image)


def test_shipped_transparent_workflow_writes_a_transparent_png(live_server):
    patched = _transparent_png(live_server, 1.0)
    assert patched[..., 3].std() > 1.0, "alpha must vary across the image"
    unpatched = _transparent_png(live_server, 0.0)
    assert np.abs(patched.astype(int) - unpatched.astype(int)).max() > 2, "the SD1.5 patch must change the image"


def test_transparent_workflow_with_perturbed_attention_guidance(live_server):
    """PAG replaces the middle block's self-attention in its extra model call; LayerDiffusion stays in effect."""
    patched = _transparent_png(live_server, 1.0, attention_guidance=True)
    assert patched[..., 3].std() > 1.0, "alpha must vary across the image"
    unpatched = _transparent_png(live_server, 0.0, attention_guidance=True)
    assert np.abs(patched.astype(int) - unpatched.astype(int)).max() > 2, "LayerDiffusion must act next to PAG"
    alone = _transparent_png(live_server, 1.0)
    assert np.abs(patched.astype(int) - alone.astype(int)).max() > 2, "PAG must act next to LayerDiffusion"


def test_shipped_joint_workflow_writes_three_layers(live_server):
    graph = _shipped("sd15_joint_layers.json", {
        ("1", "ckpt_name"): CHECKPOINT, ("8", "width"): 64, ("8", "height"): 64, ("9", "steps"): 1,
    })
    result = client.run(live_server.url, graph, timeout=900)
    assert result.ok, json.dumps(result.error, indent=1)
    paths = client.output_paths(result, live_server.output_dir)
    by_prefix = {Path(p).name.split("_0")[0]: Image.open(p) for p in paths}
    assert set(by_prefix) == {"joint_foreground", "joint_background", "joint_blended"}
    assert by_prefix["joint_foreground"].mode == "RGBA" and by_prefix["joint_background"].mode == "RGB"
    assert all(image.size == (64, 64) for image in by_prefix.values())
    background, blended = (np.asarray(by_prefix[k]).astype(int) for k in ("joint_background", "joint_blended"))
    assert np.abs(background - blended).max() > 0, "the layers are different images"


def test_transparent_generation_with_controlnet_in_the_same_graph(live_server):
    graph = _shipped("sd15_transparent.json", {
        ("1", "ckpt_name"): CHECKPOINT, ("4", "width"): 64, ("4", "height"): 64, ("5", "steps"): 1,
    })
    graph.update({
        "20": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1,
                                                      "color": 0xFFFFFF}},
        "21": {"class_type": "Canny", "inputs": {"image": ["20", 0], "low_threshold": 0.4, "high_threshold": 0.8}},
        "22": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": fixtures.SD15_CONTROLNET}},
        "23": {"class_type": "ControlNetApplyAdvanced", "inputs": {
            "positive": ["2", 0], "negative": ["3", 0], "control_net": ["22", 0], "image": ["21", 0],
            "strength": 1.0, "start_percent": 0.0, "end_percent": 1.0}},
    })
    graph["5"]["inputs"].update(positive=["23", 0], negative=["23", 1])
    result = client.run(live_server.url, graph, timeout=900)
    assert result.ok, json.dumps(result.error, indent=1)
    [png] = client.output_paths(result, live_server.output_dir)
    assert Image.open(png).mode == "RGBA"


def test_background_from_a_given_foreground(live_server):
    graph = patched_sampling_graph(
        {"class_type": "LayerDiffuseCondJointApply",
         "inputs": {"image": ["8", 0], "mode": "SD1.5 foreground to background + blended", "weight": 1.0}},
        batch=2)
    graph.update({
        "8": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0x3366CC}},
        "9": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}},
        "10": {"class_type": "LayerDiffuseDecodeSplit", "inputs": {
            "samples": ["6", 0], "images": ["9", 0], "layers": 2, "sd_version": "SD1.5", "augmentations": "1",
            "sub_batch_size": 8}},
        "11": {"class_type": "SaveImage", "inputs": {"images": ["10", 2], "filename_prefix": "e2e/fg2bg_blended"}},
    })
    result = client.run(live_server.url, graph, timeout=900)
    assert result.ok, json.dumps(result.error, indent=1)
    [png] = client.output_paths(result, live_server.output_dir)
    assert Image.open(png).size == (64, 64)
