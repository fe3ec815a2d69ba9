"""LayerDiffusion's SDXL diffusers set, its pure parts: key mapping, the mode, the codec layout and choice."""

from __future__ import annotations

import pytest
import torch
from comfyui_layer_sketch.layer_model import weights
from comfyui_layer_sketch.layer_model.codec_choice import PUBLISHED_SETS, Codec, choose_codec, latent_candidates
from comfyui_layer_sketch.layer_model.latent_spaces import SD15, SDXL
from comfyui_layer_sketch.layer_model.modes import WEIGHT_KINDS, transparent_mode
from comfyui_layer_sketch.layer_model.transparent_codec import SD_CODEC, encoder_inputs, offset_latent
from comfyui_layer_sketch.layer_model.unet_patches import diffusers_offsets

SET_CHOICE = "published (SDXL diffusers set)"
MODE = "SDXL transparent (diffusers set)"


def test_offsets_land_on_the_mapped_keys_and_unmapped_keys_are_counted():
    key_map = {"down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight":
               "diffusion_model.input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight"}
    offset = torch.randn(3, 3)
    state = {next(iter(key_map)): offset, "not.a.unet.weight": torch.zeros(1), "also.not": torch.zeros(1)}
    deltas, unmapped = diffusers_offsets(state, key_map)
    assert list(deltas) == list(key_map.values())
    assert torch.equal(deltas[key_map[next(iter(key_map))]].diff, offset) and not deltas[next(iter(deltas))].is_lora
    assert unmapped == ["also.not", "not.a.unet.weight"]


def test_the_mode_is_a_weight_mode_of_sdxl_and_auto_still_picks_attention_injection():
    mode = transparent_mode(MODE, SDXL.name)
    assert (mode.base, mode.file, mode.kind) == (weights.SDXL, "ld_diffusers_sdxl_attn.safetensors",
                                                 "diffusers_weights")
    assert mode.kind in WEIGHT_KINDS and mode.file in weights.REGISTRY
    assert transparent_mode("auto", weights.SDXL).name == "SDXL transparent (attention injection)"


def test_the_set_codec_scales_its_offset_by_300_and_reads_alpha_first():
    codec = Codec.published(*PUBLISHED_SETS[SET_CHOICE])
    assert (codec.base, codec.weight_set, codec.space) == (weights.SDXL, weights.DIFFUSERS, SDXL)
    assert codec.layout.offset_scale == 300.0 and codec.layout.alpha_first
    assert (codec.layout.latent_channels, codec.layout.downscale) == (SD_CODEC.latent_channels, SD_CODEC.downscale)
    assert codec.describe() == "the published SDXL codec (diffusers set)"
    mean, std, offset = torch.zeros(1, 4, 2, 2), torch.full((1, 4, 2, 2), 0.5), torch.full((1, 4, 2, 2), 0.01)
    torch.testing.assert_close(offset_latent(mean, std, offset, codec.layout.offset_scale), mean + 1.5)


def test_the_vae_input_of_the_set_is_the_grey_composite():
    """The CLI feeds its VAE (rgb*2-1)*alpha in [-1, 1]: in [0, 1] pixels, what encoder_inputs composites."""
    generator = torch.Generator().manual_seed(0)
    rgb, alpha = torch.rand(1, 3, 16, 16, generator=generator), torch.rand(1, 1, 16, 16, generator=generator)
    vae_rgb, encoder_input = encoder_inputs(rgb, alpha, Codec.published(*PUBLISHED_SETS[SET_CHOICE]).layout)
    torch.testing.assert_close(vae_rgb * 2 - 1, (rgb * 2 - 1) * alpha)
    torch.testing.assert_close(encoder_input[:, :1], alpha)  # then the colour-filled RGB


def test_the_set_codec_is_checked_against_the_latents_in_use():
    codec = Codec.published(*PUBLISHED_SETS[SET_CHOICE])
    assert choose_codec(codec, "auto", SDXL, "SDXL", lambda: (SDXL,)) is codec
    assert choose_codec(codec, "auto", None, "", lambda: latent_candidates((1, 4, 8, 8))) is codec
    with pytest.raises(ValueError, match=r"SDXL codec \(diffusers set\) was trained for SDXL latents, but the "
                                         r"connected MODEL \(SD15\) samples SD1.5"):
        choose_codec(codec, "auto", SD15, "SD15", lambda: (SD15,))
    with pytest.raises(ValueError, match="sd_version is SD1.5"):
        choose_codec(codec, "SD1.5", None, "", lambda: (SD15, SDXL))
    with pytest.raises(ValueError, match="The latent has 16 channels"):
        choose_codec(codec, "auto", None, "", lambda: latent_candidates((1, 16, 8, 8)), (1, 16, 8, 8))
