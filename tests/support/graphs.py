"""Small API-format graphs the HTTP tests share, and the shipped graphs shrunk for a CPU."""

from __future__ import annotations

from pathlib import Path

from comfyui_layer_sketch import queue_workflow as client

from .fixtures import SD15_CHECKPOINT as CHECKPOINT

TEXT_ENCODER_LOADERS = ("CLIPLoader", "DualCLIPLoader")
TEST_CONDITIONING = "LayerSketchTestFluxConditioning"  # support/flux_test_nodes


def shrunk(path: Path, conditioning: dict | None, *settings: dict[str, dict]) -> dict:
    """A shipped graph with, where `conditioning` gives the test-only node's inputs (tokens, features, pooled), its
    text encoders swapped for that node (seeded by the encode node's id, so that prompts differ); then each of
    `settings` ({node type: inputs}) applied in turn."""
    graph = client.load_workflow(path)
    for node_id, node in list(graph.items()):
        kind = node["class_type"]
        if conditioning is not None and kind in TEXT_ENCODER_LOADERS:
            del graph[node_id]
            continue
        if conditioning is not None and kind == "CLIPTextEncode":
            node = graph[node_id] = {"class_type": TEST_CONDITIONING, "inputs": {"seed": int(node_id), **conditioning}}
        for changes in settings:
            node["inputs"].update(changes.get(kind, {}))
    return graph


def decode_graph(width: int, height: int, image_width: int, image_height: int, sd_version: str = "SD1.5",
                 node: str = "LayerDiffuseDecode", batch: int = 1, **extra) -> dict:
    inputs = {"samples": ["1", 0], "images": ["2", 0], "sd_version": sd_version, "augmentations": "1",
              "sub_batch_size": 8, **extra}
    return {
        "1": {"class_type": "EmptyLatentImage", "inputs": {"width": width, "height": height, "batch_size": batch}},
        "2": {"class_type": "EmptyImage", "inputs": {"width": image_width, "height": image_height,
                                                     "batch_size": batch, "color": 0x808080}},
        "3": {"class_type": node, "inputs": inputs},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "e2e/decode"}},
    }


def encode_graph() -> dict:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT}},
        "2": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
        "3": {"class_type": "LayerDiffuseEncode",
              "inputs": {"image": ["2", 0], "vae": ["1", 2], "sd_version": "SD1.5"}},
        "4": {"class_type": "SaveLatent", "inputs": {"samples": ["3", 0], "filename_prefix": "e2e/encoded"}},
    }


def patched_sampling_graph(apply: dict, batch: int = 1) -> dict:
    """Checkpoint -> a LayerDiffusion apply node (id 5, model input wired) -> KSampler."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a cat"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": ""}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": batch}},
        "5": {"class_type": apply["class_type"], "inputs": {"model": ["1", 0], **apply["inputs"]}},
        "6": {"class_type": "KSampler", "inputs": {"model": ["5", 0], "positive": ["2", 0], "negative": ["3", 0],
                                                   "latent_image": ["4", 0], "seed": batch, "steps": 1, "cfg": 5.0,
                                                   "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "7": {"class_type": "SaveLatent", "inputs": {"samples": ["6", 0], "filename_prefix": "e2e/patched"}},
    }
