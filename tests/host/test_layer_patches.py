"""UNet patches on tiny SDXL- and SD1.5-shaped host models: exact weights, isolation, every knob."""

from __future__ import annotations

import comfy.model_management as mm
import comfy.sample
import comfy.supported_models
import comfy.utils
import pytest
import torch
from comfyui_layer_sketch.layer_model import host_patches
from comfyui_layer_sketch.layer_model.attention_sharing import SD15_ATTENTION_PATHS, attention_paths
from comfyui_layer_sketch.layer_model.unet_patches import SigmaGate, parse_unet_patches
from comfyui_layer_sketch.nodes import NODE_CLASS_MAPPINGS
from support import layer_files
from support.host_models import tiny_model
from support.layer_modes import conds

Apply = NODE_CLASS_MAPPINGS["LayerDiffuseApply"]
XL_ATTN, XL_CONV = "SDXL transparent (attention injection)", "SDXL transparent (conv injection)"
SD15_ATTN = "SD1.5 transparent (attention sharing)"


def sample(model, batch: int = 1, seed: int = 1, steps: int = 3) -> torch.Tensor:
    latent = torch.zeros(batch, 4, 8, 8)
    noise = comfy.sample.prepare_noise(latent, seed)
    positive, negative = conds(model)
    return comfy.sample.sample(model, noise, steps, 5.0, "euler", "normal", positive, negative, latent,
                               seed=seed, disable_pbar=True)


@pytest.fixture
def sdxl():
    return tiny_model("SDXL")


@pytest.fixture
def sd15():
    return tiny_model("SD15")


def test_sdxl_attention_lora_adds_exactly_up_times_down(layer_folder, sdxl):
    lora = layer_files.sdxl_attention_lora(sdxl)
    layer_files.save(lora, layer_folder / "layer_xl_transparent_attn.safetensors")
    key = "diffusion_model.output_blocks.2.1.transformer_blocks.0.attn1.to_k.weight"
    base_weight = comfy.utils.get_attr(sdxl.model, key).detach().clone()
    (patched,) = Apply().apply(sdxl, XL_ATTN, 0.7)
    patched.patch_model()
    try:
        merged = comfy.utils.get_attr(patched.model, key).detach().clone()
    finally:
        patched.unpatch_model()
    expected = base_weight + 0.7 * lora[key + "::lora::0"] @ lora[key + "::lora::1"]
    torch.testing.assert_close(merged, expected, rtol=0, atol=1e-6)
    assert torch.equal(comfy.utils.get_attr(sdxl.model, key), base_weight), "the base model must be restored"
    patched_keys = {k for k in patched.patches}
    assert len(patched_keys) == len(lora) // 2 and key in patched_keys


@pytest.mark.parametrize("mode, make", [
    (XL_ATTN, layer_files.sdxl_attention_lora),
    (XL_CONV, layer_files.sdxl_conv_diff),
])
def test_sdxl_patches_sample_and_leave_the_base_untouched(layer_folder, sdxl, mode, make):
    name = {XL_ATTN: "layer_xl_transparent_attn.safetensors", XL_CONV: "layer_xl_transparent_conv.safetensors"}
    layer_files.save(make(sdxl), layer_folder / name[mode])
    before = sample(sdxl)
    (patched,) = Apply().apply(sdxl, mode, 1.0)
    during = sample(patched)
    after = sample(sdxl)
    assert torch.equal(before, after), "sampling the patched clone must not change the base model"
    assert torch.isfinite(during).all() and (during - before).abs().max() > 1e-3


def test_sd15_attention_sharing_samples_and_leaves_the_base_untouched(layer_folder, sd15):
    layer_files.save(layer_files.attention_sharing(sd15, 1, False),
                     layer_folder / "layer_sd15_transparent_attn.safetensors")
    before = sample(sd15, batch=2)
    (patched,) = Apply().apply(sd15, "auto", 1.0)
    during = sample(patched, batch=2)
    after = sample(sd15, batch=2)
    assert torch.equal(before, after)
    assert torch.isfinite(during).all() and (during - before).abs().max() > 1e-3
    (off,) = Apply().apply(sd15, SD15_ATTN, 0.0)
    assert torch.equal(sample(off, batch=2), before), "weight 0 must be the unpatched model"
    (half,) = Apply().apply(sd15, SD15_ATTN, 0.5)
    assert (sample(half, batch=2) - during).abs().max() > 1e-4, "the weight must act on SD1.5 too"


def test_sd15_stop_at_changes_only_the_later_steps(layer_folder, sd15):
    layer_files.save(layer_files.attention_sharing(sd15, 1, False),
                     layer_folder / "layer_sd15_transparent_attn.safetensors")
    full = sample(Apply().apply(sd15, SD15_ATTN, 1.0)[0], steps=8)
    early = sample(Apply().apply(sd15, SD15_ATTN, 1.0, 0.0, 0.5)[0], steps=8)
    none = sample(Apply().apply(sd15, SD15_ATTN, 1.0, 1.0, 1.0)[0], steps=8)
    base = sample(sd15, steps=8)
    assert (early - full).abs().max() > 1e-4 and (early - base).abs().max() > 1e-4
    assert torch.equal(none, base), "a range that starts at the end applies the patch to no step"


def test_mode_for_another_base_is_refused_before_reading_files(layer_folder, sdxl, sd15):
    with pytest.raises(ValueError, match="made for SD1.5 models, but the connected MODEL is SDXL"):
        Apply().apply(sdxl, SD15_ATTN, 1.0)
    with pytest.raises(ValueError, match="made for SDXL models, but the connected MODEL is SD1.5"):
        Apply().apply(sd15, XL_CONV, 1.0)


def test_weight_file_for_other_layers_is_refused(layer_folder, sd15, sdxl):
    layer_files.save(layer_files.attention_sharing(sd15, 3, False),  # joint file under the single-layer name
                     layer_folder / "layer_sd15_transparent_attn.safetensors")
    with pytest.raises(Exception, match="does not hold"):
        Apply().apply(sd15, SD15_ATTN, 1.0)
    layer_files.save(layer_files.sdxl_attention_lora(tiny_model("SDXL", seed=3), rank=4) |
                     {"diffusion_model.not_a_layer.weight::diff::0": torch.zeros(3)},
                     layer_folder / "layer_xl_transparent_attn.safetensors")
    with pytest.raises(ValueError, match="does not fit the connected model"):
        Apply().apply(sdxl, XL_ATTN, 1.0)


def test_attention_order_on_the_real_sd15_layout():
    from support.host_models import SD15_FULL_UNET
    config = comfy.supported_models.SD15(dict(SD15_FULL_UNET))
    with torch.device("meta"):
        base = config.get_model({}, "", device=torch.device("meta"))
    assert attention_paths(base.diffusion_model) == SD15_ATTENTION_PATHS
    assert mm.get_torch_device() is not None


JointApply = NODE_CLASS_MAPPINGS["LayerDiffuseJointApply"]
CondJointApply = NODE_CLASS_MAPPINGS["LayerDiffuseCondJointApply"]
FG2BG = "SD1.5 foreground to background + blended"


def _prompt(seed: int):
    return [[torch.randn(1, 77, 768, generator=torch.Generator().manual_seed(seed)), {}]]


def test_joint_generates_three_layers_with_their_own_prompts(layer_folder, sd15):
    layer_files.save(layer_files.attention_sharing(sd15, 3, False), layer_folder / "layer_sd15_joint.safetensors")
    base = sample(sd15, batch=3)
    (joint,) = JointApply().apply(sd15, 1.0)
    shared = sample(joint, batch=3)
    assert torch.isfinite(shared).all() and (shared - base).abs().max() > 1e-3
    (prompted,) = JointApply().apply(sd15, 1.0, foreground_prompt=_prompt(11), blended_prompt=_prompt(12))
    per_layer = sample(prompted, batch=6)
    assert per_layer.shape[0] == 6 and (per_layer[:3] - shared).abs().max() > 1e-4
    assert torch.equal(sample(sd15, batch=3), base)
    with pytest.raises(ValueError, match="not a multiple of the 3 layers"):
        sample(joint, batch=2)


def test_cond_joint_follows_the_condition_image(layer_folder, sd15):
    layer_files.save(layer_files.attention_sharing(sd15, 2, True), layer_folder / "layer_sd15_fg2bg.safetensors")
    foreground = torch.rand(1, 64, 64, 4, generator=torch.Generator().manual_seed(2))
    (first,) = CondJointApply().apply(sd15, foreground, FG2BG, 1.0)
    (second,) = CondJointApply().apply(sd15, 1.0 - foreground, FG2BG, 1.0)
    a, b = sample(first, batch=2), sample(second, batch=2)
    assert torch.isfinite(a).all() and (a - b).abs().max() > 1e-4, "the condition image must steer the result"
    (wrong_size,) = CondJointApply().apply(sd15, torch.rand(1, 96, 64, 3), FG2BG, 1.0)
    with pytest.raises(ValueError, match="does not match the size being generated"):
        sample(wrong_size, batch=2)
    with pytest.raises(ValueError, match="made for SD1.5 models"):
        CondJointApply().apply(tiny_model("SDXL"), foreground, FG2BG, 1.0)


CondApply = NODE_CLASS_MAPPINGS["LayerDiffuseCondApply"]
DiffApply = NODE_CLASS_MAPPINGS["LayerDiffuseDiffApply"]


def _latent(seed: int, size: int = 8) -> dict:
    return {"samples": torch.randn(1, 4, size, size, generator=torch.Generator().manual_seed(seed))}


def _sample_with(model, positive, negative, batch: int = 1) -> torch.Tensor:
    latent = torch.zeros(batch, 4, 8, 8)
    return comfy.sample.sample(model, comfy.sample.prepare_noise(latent, 1), 3, 5.0, "euler", "normal",
                               positive, negative, latent, seed=1, disable_pbar=True)


@pytest.mark.parametrize("node, file, mode, latents", [
    (CondApply, "layer_xl_fg2ble.safetensors", "SDXL foreground to blended", 1),
    (DiffApply, "layer_xl_bgble2fg.safetensors", "SDXL background + blended to foreground", 2),
])
def test_sdxl_layer_models_take_the_given_layers(layer_folder, sdxl, node, file, mode, latents):
    layer_files.save(layer_files.sdxl_conv_diff(sdxl, extra_input_channels=4 * latents), layer_folder / file)
    positive, negative = conds(sdxl)
    base = _sample_with(sdxl, positive, negative, batch=2)
    given = [_latent(seed) for seed in range(latents)]
    model, pos, neg = node().apply(sdxl, positive, negative, *given, mode, 1.0)
    out = _sample_with(model, pos, neg, batch=2)
    other = node().apply(sdxl, positive, negative, *[_latent(seed + 7) for seed in range(latents)], mode, 1.0)
    out_other = _sample_with(other[0], other[1], other[2], batch=2)
    assert torch.isfinite(out).all() and (out - out_other).abs().max() > 1e-4, "the given layer must steer"
    assert torch.equal(_sample_with(sdxl, positive, negative, batch=2), base), "the base model stays as it was"
    assert "noise_concat" not in positive[0][1], "the input conditioning is not modified in place"
    small = node().apply(sdxl, positive, negative, *[_latent(seed, size=6) for seed in range(latents)], mode, 1.0)
    with pytest.raises(ValueError, match="condition latent is 48x48 px but the image being generated is 64x64"):
        _sample_with(*small)
    with pytest.raises(ValueError, match="made for SDXL models"):
        node().apply(tiny_model("SD15"), positive, negative, *given, mode, 1.0)


def test_sdxl_layer_file_with_the_wrong_conv_in_is_refused(layer_folder, sdxl):
    layer_files.save(layer_files.sdxl_conv_diff(sdxl, extra_input_channels=8),
                     layer_folder / "layer_xl_fg2ble.safetensors")  # an 8-channel file under a 4-channel name
    positive, negative = conds(sdxl)
    with pytest.raises(ValueError, match="expects 8 concatenated condition channels"):
        CondApply().apply(sdxl, positive, negative, _latent(0), "SDXL foreground to blended", 1.0)


@pytest.mark.parametrize("mode, make, file", [
    (XL_ATTN, layer_files.sdxl_attention_lora, "layer_xl_transparent_attn.safetensors"),
    (XL_CONV, layer_files.sdxl_conv_diff, "layer_xl_transparent_conv.safetensors"),
])
def test_sdxl_stop_at_gates_the_weights_by_sigma(layer_folder, sdxl, mode, make, file):
    layer_files.save(make(sdxl), layer_folder / file)
    base = sample(sdxl, steps=6)
    merged = sample(Apply().apply(sdxl, mode, 1.0)[0], steps=6)
    gated = sdxl.clone()  # gated layers held open for every step must compute what merged weights compute
    deltas = parse_unet_patches(make(sdxl), file)
    host_patches._gate_deltas(gated, deltas, 1.0, SigmaGate(float("inf"), 0.0))
    whole_range_gated = sample(gated, steps=6)
    early = sample(Apply().apply(sdxl, mode, 1.0, 0.0, 0.5)[0], steps=6)
    never = sample(Apply().apply(sdxl, mode, 1.0, 1.0, 1.0)[0], steps=6)
    torch.testing.assert_close(whole_range_gated, merged, atol=1e-3, rtol=1e-3)
    assert (early - merged).abs().max() > 1e-4 and (early - base).abs().max() > 1e-4
    assert torch.equal(never, base), "a range that starts at the end applies the patch to no step"
    assert torch.equal(sample(sdxl, steps=6), base)


def test_sdxl_layer_model_with_a_range_ignores_the_condition_outside_it(layer_folder, sdxl):
    layer_files.save(layer_files.sdxl_conv_diff(sdxl, extra_input_channels=4),
                     layer_folder / "layer_xl_fg2ble.safetensors")
    positive, negative = conds(sdxl)
    mode = "SDXL foreground to blended"
    full = _sample_with(*CondApply().apply(sdxl, positive, negative, _latent(0), mode, 1.0))
    early = _sample_with(*CondApply().apply(sdxl, positive, negative, _latent(0), mode, 1.0, 0.0, 0.5))
    never = _sample_with(*CondApply().apply(sdxl, positive, negative, _latent(0), mode, 1.0, 1.0, 1.0))
    assert torch.isfinite(early).all() and (early - full).abs().max() > 1e-4
    assert torch.equal(never, _sample_with(sdxl, positive, negative)), "outside the range: the plain model"
