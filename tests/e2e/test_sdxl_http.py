"""SDXL over HTTP on a full-size SDXL checkpoint with random bf16 weights: the shipped transparent workflows, with
the attention LoRA (v1) and with the diffusers set's offsets and codec.

Its own server (`--bf16-unet`), started after the SD1.5 server has freed its models: the SDXL model set
takes about 7 GB of RAM in bf16/fp16, and a CI machine has 24 GiB.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from comfyui_layer_sketch import queue_workflow as client
from PIL import Image
from support import diffusers_set, fixtures
from support.servers import new_base_dir, start_server

pytestmark = pytest.mark.e2e

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows" / "api"
V1, DIFFUSERS_SET = "sdxl_transparent.json", "sdxl_transparent_diffusers_set.json"  # the same node ids


@pytest.fixture(scope="module")
def sdxl_server(tmp_path_factory, fixture_cache):
    checkpoint, lora = fixtures.sdxl_checkpoint_and_lora(fixture_cache)
    base = new_base_dir(tmp_path_factory.mktemp, {"checkpoints": {checkpoint.name: checkpoint}})
    layer_folder = tmp_path_factory.mktemp("sdxl_models") / "layer_model"
    layer_folder.mkdir()
    (layer_folder / "layer_xl_transparent_attn.safetensors").symlink_to(lora)
    (layer_folder / "vae_transparent_decoder.safetensors").symlink_to(fixtures.decoder_file(fixture_cache))
    (layer_folder / "ld_diffusers_sdxl_attn.safetensors").symlink_to(
        diffusers_set.attn_file(fixture_cache, layout=diffusers_set.FULL_SDXL))
    # The set's decoder has v1's layout; another seed, so that decoding with the wrong one would show.
    (layer_folder / "ld_diffusers_sdxl_vae_transparent_decoder.safetensors").symlink_to(
        fixtures.decoder_file(fixture_cache, seed=1))
    server = start_server(base, layer_folder, ("--bf16-unet",))
    yield server, base
    server.stop()


def _graph(changes: dict, workflow: str = V1) -> dict:
    graph = client.load_workflow(WORKFLOWS / workflow)
    for (node, field), value in {("1", "ckpt_name"): fixtures.SDXL_CHECKPOINT, ("4", "width"): 64,
                                 ("4", "height"): 64, ("5", "steps"): 1, ("7", "augmentations"): "2",
                                 **changes}.items():
        graph[node]["inputs"][field] = value
    return graph


def _run(server, base: Path, weight: float, workflow: str = V1, changes: dict | None = None) -> np.ndarray:
    result = client.run(server.url, _graph({("10", "weight"): weight, **(changes or {})}, workflow), timeout=1500)
    assert result.ok, json.dumps(result.error, indent=1)
    [png] = client.output_paths(result, base / "output")
    image = Image.open(png)
    assert image.mode == "RGBA" and image.size == (64, 64)
    return np.asarray(image)


def test_shipped_sdxl_attention_workflow_on_a_full_size_checkpoint(sdxl_server):
    server, base = sdxl_server
    patched = _run(server, base, 1.0)
    assert patched[..., 3].std() > 1.0, "alpha must vary across the image"
    unpatched = _run(server, base, 0.0)
    assert np.abs(patched.astype(int) - unpatched.astype(int)).max() > 2, "the attention LoRA must change the image"


def test_the_server_sees_the_checkpoint_as_sdxl(sdxl_server):
    """What a user sees when picking an SD1.5 mode for this checkpoint: the host detected SDXL."""
    server, _ = sdxl_server
    result = client.run(server.url, _graph({("10", "mode"): "SD1.5 transparent (attention sharing)"}),
                        timeout=600)
    assert not result.ok
    assert "the connected MODEL is SDXL" in result.error["exception_message"], result.error["exception_message"]


def test_shipped_diffusers_set_workflow_on_a_full_size_checkpoint(sdxl_server):
    """Every one of the 420 offsets lands on the full SDXL UNet (else the prompt fails), changes the image, and the
    set's own decoder makes the RGBA (v1's decoder gives other alpha)."""
    server, base = sdxl_server
    patched = _run(server, base, 1.0, DIFFUSERS_SET)
    assert patched[..., 3].std() > 1.0, "alpha must vary across the image"
    unpatched = _run(server, base, 0.0, DIFFUSERS_SET)
    assert np.abs(patched.astype(int) - unpatched.astype(int)).max() > 2, "the set's offsets must change the image"
    with_v1_codec = _run(server, base, 1.0, DIFFUSERS_SET, {("7", "codec"): "published"})
    assert np.abs(patched[..., 3].astype(int) - with_v1_codec[..., 3].astype(int)).max() > 2, \
        "the set's decoder, not v1's, decodes"
