"""A soak over HTTP: 100 prompts alternating patched, unpatched, decode and guided sampling on one server.

No prompt may fail, the unpatched result must stay bit-identical throughout (nothing the pack does to a
clone may leak into the base model), and the server's resident memory growth is reported.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from comfyui_layer_sketch import queue_workflow as client
from PIL import Image
from support import fixtures, sketches
from support.fixtures import SD15_CHECKPOINT as CHECKPOINT

pytestmark = pytest.mark.e2e

PROMPTS = 100


def _sampler(node_id: str, model: list, prefix: str) -> dict:
    return {
        f"{node_id}k": {"class_type": "KSampler", "inputs": {
            "model": model, "positive": ["2", 0], "negative": ["2", 0], "latent_image": ["3", 0], "seed": 5,
            "steps": 1, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        f"{node_id}s": {"class_type": "SaveLatent", "inputs": {"samples": [f"{node_id}k", 0],
                                                              "filename_prefix": f"soak/{prefix}"}},
    }


def _graphs() -> dict[str, dict]:
    shared = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT}},
              "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a lighthouse"}},
              "3": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}}
    return {
        "unpatched": shared | _sampler("u", ["1", 0], "unpatched"),
        "patched": shared | {"p": {"class_type": "LayerDiffuseApply", "inputs": {
            "model": ["1", 0], "mode": "auto", "weight": 1.0}}} | _sampler("p", ["p", 0], "patched"),
        "decode": shared | {
            "d1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1,
                                                          "color": 0x808080}},
            "d2": {"class_type": "LayerDiffuseDecode", "inputs": {
                "samples": ["3", 0], "images": ["d1", 0], "sd_version": "SD1.5", "augmentations": "1",
                "sub_batch_size": 8}},
            "d3": {"class_type": "PreviewImage", "inputs": {"images": ["d2", 2]}}},
        "guided": shared | {
            "g1": {"class_type": "LoadImage", "inputs": {"image": "soak_sketch.png"}},
            "g2": {"class_type": "SketchGuidanceLoadPredictor", "inputs": {"predictor_name": fixtures.SD15_PREDICTOR}},
            "g3": {"class_type": "SketchGuidanceApply", "inputs": {
                "model": ["1", 0], "vae": ["1", 2], "edge_predictor": ["g2", 0], "sketch": ["g1", 0],
                "strength": 1.6, "end_percent": 1.0}}} | _sampler("g", ["g3", 0], "guided"),
    }


def _resident_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def test_soak_alternating_prompts(live_server):
    (live_server.base / "input").mkdir(exist_ok=True)
    Image.fromarray((sketches.drawn_sketch(9)[0].numpy() * 255).astype(np.uint8)).save(
        live_server.base / "input" / "soak_sketch.png")
    graphs, kinds = _graphs(), ["unpatched", "patched", "decode", "guided"]
    reference, resident = None, []
    for index in range(PROMPTS):
        kind = kinds[index % len(kinds)]
        result = client.run(live_server.url, graphs[kind], timeout=600)
        assert result.ok, f"prompt {index} ({kind}): {json.dumps(result.error, indent=1)}"
        if kind == "unpatched":
            cached = [data.get("nodes", []) for name, data in result.messages if name == "execution_cached"]
            assert "uk" not in sum(cached, []), "the unpatched sampler must run again, not come from the cache"
            [saved] = result.outputs["us"]["latents"]
            path = live_server.output_dir / saved["subfolder"] / saved["filename"]
            latent = safetensors.torch.load_file(str(path))["latent_tensor"]
            if reference is None:
                reference = latent
            assert torch.equal(latent, reference), f"prompt {index}: the unpatched result changed"
        if index % len(kinds) == len(kinds) - 1:
            resident.append(_resident_mib(live_server.server.process.pid))
    growth = resident[-1] - resident[0]
    print(f"soak: {PROMPTS} prompts, server resident memory {resident[0]:.0f} MiB after the first round, "
          f"{resident[-1]:.0f} MiB at the end ({growth:+.0f} MiB)")
    assert growth < 1024, f"resident memory grew by {growth:.0f} MiB over {PROMPTS} prompts"

