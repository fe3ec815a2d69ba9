"""The RGBA VAEs' LoRAs in the registry (licences, which model), and the assumed Extract-4B layout against the one
number its repository publishes about the file: its size."""

from __future__ import annotations

import safetensors.torch
import torch
from comfyui_layer_sketch.layer_model import weights
from comfyui_layer_sketch.layer_model.rgba_loras import RGBA_VAE_LORAS
from support import klein_models

EXTRACT_4B_BYTES = 92_426_712  # github TR-MZ/flux2-klein-alpha, training/extract_4b.json


def test_every_lora_is_registered_with_its_model_and_licence():
    registered = {name for name, entry in weights.REGISTRY.items() if entry.kind == weights.RGBA_VAE_LORA}
    assert registered == set(RGBA_VAE_LORAS)
    licences = {name: weights.REGISTRY[name].licence for name in RGBA_VAE_LORAS}
    assert licences["flux2_klein_alpha_extract_4b.safetensors"] == "Apache-2.0"
    assert licences["flux2_klein_alpha_extract_9b.safetensors"] == weights.NON_COMMERCIAL
    assert licences["flux2_klein_alpha_remove_9b.safetensors"] == weights.NON_COMMERCIAL
    assert licences["alphavae_flux1_lora.safetensors"].startswith("none stated")
    for name, lora in RGBA_VAE_LORAS.items():
        assert weights.REGISTRY[name].base == (weights.FLUX if lora.model.startswith("FLUX.1") else weights.FLUX2)
        assert lora.hidden_size == (4096 if "9B" in lora.model else 3072)


def test_the_assumed_extract_4b_layout_has_the_published_size_up_to_metadata():
    """80 modules at rank 32 in bf16 under `diffusion_model.<BFL module>`: the tensors fill the published file up to
    a few hundred bytes of header (safetensors metadata, which trainers write; the file's own is unknown here)."""
    state = klein_models.klein_lora(klein_models.lora_targets(*klein_models.KLEIN_4B_BLOCKS), rank=32, scale=0.0,
                                    dtype=torch.bfloat16)
    assert len(state) == 160
    size = len(safetensors.torch.save(state))
    # measured: 448 bytes short; one module more or less, or another rank, is at least 393,216 bytes off
    assert 0 <= EXTRACT_4B_BYTES - size < 1024, size
