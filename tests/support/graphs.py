"""Small API-format graphs the HTTP tests share."""

from __future__ import annotations

from .fixtures import SD15_CHECKPOINT as CHECKPOINT


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
