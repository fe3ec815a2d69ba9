"""A user's LoRA before and after every LayerDiffusion apply node, judged on the sampled output."""

from __future__ import annotations

import comfy.sample
import pytest
import torch
from comfyui_layer_sketch.nodes import NODE_CLASS_MAPPINGS
from support import layer_files
from support.host_models import tiny_model
from support.layer_modes import (
    SD15_MODES,
    SDXL_MODES,
    apply_mode,
    conds,
    frames_of,
    install_mode_files,
    install_sdxl_files,
)
from support.layer_modes import sample as sample_model
from support.loras import write_lora

from nodes import LoraLoaderModelOnly

COMBINATIONS = [(mode, 0.0, 1.0) for mode in SD15_MODES] + [("transparent", 0.0, 0.5)] + \
    [(mode, 0.0, 1.0) for mode in SDXL_MODES] + [(mode, 0.3, 0.7) for mode in SDXL_MODES]


@pytest.fixture(scope="module")
def models():
    return {"SD15": tiny_model("SD15"), "SDXL": tiny_model("SDXL")}


def _with_lora(model, name: str):
    return LoraLoaderModelOnly().load_lora_model_only(model, name, 1.0)[0]


@pytest.mark.parametrize("mode, start, end", COMBINATIONS)
def test_user_lora_before_and_after_layer_diffusion(layer_folder, lora_folder, models, mode, start, end):
    model = models["SDXL" if mode in SDXL_MODES else "SD15"]
    install_sdxl_files(layer_folder, model) if mode in SDXL_MODES else install_mode_files(layer_folder, model)
    name = write_lora(lora_folder, model)
    batch = 1 if mode in SDXL_MODES else frames_of(mode)

    def sample(patched):
        return sample_model(patched, batch, steps=4)

    lora_first = sample(apply_mode(_with_lora(model, name), mode, 1.0, start, end))
    layers_first = sample(_with_lora(apply_mode(model, mode, 1.0, start, end), name))
    lora_effect = (lora_first - sample(apply_mode(model, mode, 1.0, start, end))).abs().max()
    order = (layers_first - lora_first).abs().max() / lora_effect
    assert order <= 1e-3, f"the LoRA must act the same after the LayerDiffusion node as before it ({order:.1e})"
    assert lora_effect > 1e-3, "the LoRA acts"
    assert (lora_first - sample(_with_lora(model, name))).abs().max() > 1e-3, "LayerDiffusion stays in effect"


def test_user_lora_before_and_after_an_sdxl_layer_model(layer_folder, lora_folder, models):
    """Layer Diffuse Cond Apply (a layer model with a wider conv_in, fed the given layer by concatenation)."""
    model = models["SDXL"]
    layer_files.save(layer_files.sdxl_conv_diff(model, extra_input_channels=4),
                     layer_folder / "layer_xl_fg2ble.safetensors")
    name = write_lora(lora_folder, model)
    positive, negative = conds(model)
    layer = {"samples": torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))}

    def apply(patched):
        return NODE_CLASS_MAPPINGS["LayerDiffuseCondApply"]().apply(patched, positive, negative, layer,
                                                                    "SDXL foreground to blended", 1.0)

    def sample(patched, pos, neg):
        latent = torch.zeros(1, 4, 8, 8)
        return comfy.sample.sample(patched, comfy.sample.prepare_noise(latent, 1), 4, 5.0, "euler", "normal", pos,
                                   neg, latent, seed=1, disable_pbar=True)

    lora_first = sample(*apply(_with_lora(model, name)))
    layered, pos, neg = apply(model)
    layers_first = sample(_with_lora(layered, name), pos, neg)
    lora_effect = (lora_first - sample(layered, pos, neg)).abs().max()
    assert (layers_first - lora_first).abs().max() / lora_effect <= 1e-3 and lora_effect > 1e-3
    assert (lora_first - sample(_with_lora(model, name), positive, negative)).abs().max() > 1e-3
