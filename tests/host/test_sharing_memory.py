"""SD1.5 attention sharing under host model management: size planning, the control encoder, offloaded weights."""

from __future__ import annotations

import comfy.model_management as mm
import comfy.utils
import torch
from comfyui_layer_sketch.layer_model import host_patches
from comfyui_layer_sketch.layer_model.attention_sharing import AttentionSharingUnit, ControlEncoder
from comfyui_layer_sketch.nodes import NODE_CLASS_MAPPINGS
from support import layer_files
from support.host_models import tiny_model

Apply = NODE_CLASS_MAPPINGS["LayerDiffuseApply"]
CondJointApply = NODE_CLASS_MAPPINGS["LayerDiffuseCondJointApply"]


def _unit_bytes(state: dict[str, torch.Tensor]) -> int:
    return sum(v.numel() * 4 for k, v in state.items() if k.startswith("hookers."))  # the tiny UNet is fp32


def test_patched_size_counts_the_units_the_host_will_load(layer_folder):
    model = tiny_model("SD15")
    state = layer_files.attention_sharing(model, 1, False)
    layer_files.save(state, layer_folder / "layer_sd15_transparent_attn.safetensors")
    base_size = model.model_size()
    (patched,) = Apply().apply(model, "auto", 1.0)
    assert patched.model_size() == base_size + _unit_bytes(state)
    assert model.model_size() == base_size, "the base model's size must stay its own"
    patched.patch_model()
    try:  # what the host measures once the units are patched in is what it planned for
        assert mm.module_size(patched.model) == patched.model_size()
    finally:
        patched.unpatch_model()


def test_control_encoder_runs_through_host_model_management(layer_folder, monkeypatch):
    requested = []
    real_load = mm.load_models_gpu
    monkeypatch.setattr(mm, "load_models_gpu", lambda models, *a, **k: (requested.extend(models),
                                                                       real_load(models, *a, **k)))
    model = tiny_model("SD15")
    layer_files.save(layer_files.attention_sharing(model, 2, True), layer_folder / "layer_sd15_fg2bg.safetensors")
    image = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(0))
    (patched,) = CondJointApply().apply(model, image, "SD1.5 foreground to background + blended", 1.0)
    assert [type(p.model) for p in requested] == [ControlEncoder], "the host must load (and place) the encoder"
    unit = patched.object_patches["diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1"]
    assert isinstance(unit, AttentionSharingUnit)
    maps = unit._state.control
    assert sorted(maps) == [1, 4, 16, 64]  # 64 px: 8x8, 4x4, 2x2, 1x1 tokens
    for signal in maps.values():
        assert signal.device == mm.get_torch_device() and not signal.is_inference()


def test_units_take_the_unet_weights_as_the_host_computes_them():
    """A weight the host patches on the fly (a user's LoRA in low-VRAM mode) reaches the unit's projections."""
    model = tiny_model("SD15")
    linear = comfy.utils.get_attr(model.model, "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q")
    x = torch.randn(1, 4, linear.in_features)
    plain, _ = host_patches._host_weights(linear, x)
    assert torch.equal(plain, linear.weight)
    linear.weight_function.append(lambda weight: weight + 1.0)
    try:
        patched, _ = host_patches._host_weights(linear, x)
    finally:
        linear.weight_function.clear()
    torch.testing.assert_close(patched, linear.weight + 1.0)
