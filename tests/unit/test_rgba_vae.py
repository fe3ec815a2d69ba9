"""layer_model/rgba_vae.py: which RGBA VAE a state dict holds, read from shapes in either key layout, and the pieces
the host build needs (pure torch: shapes only, no weights)."""

from __future__ import annotations

import pytest
import torch
from comfyui_layer_sketch.layer_model import rgba_vae
from comfyui_layer_sketch.layer_model.rgba_vae import FLUX1_RGBA, FLUX2_RGBA, RGBAVAEError


def _state(image_in: int = 4, image_out: int = 4, latent: int = 16, batch_norm: bool = False,
           diffusers: bool = False) -> dict[str, torch.Tensor]:
    state = {"encoder.conv_in.weight": torch.zeros(128, image_in, 3, 3),
             "decoder.conv_out.weight": torch.zeros(image_out, 128, 3, 3),
             "decoder.conv_in.weight": torch.zeros(512, latent, 3, 3)}
    if batch_norm:
        state["bn.running_mean"] = torch.zeros(4 * latent)
    if diffusers:
        state[rgba_vae.DIFFUSERS_MARK] = torch.ones(512)
    return state


@pytest.mark.parametrize("diffusers", [False, True])
def test_each_published_kind_is_read_from_shapes_in_either_layout(diffusers):
    assert rgba_vae.rgba_kind(_state(diffusers=diffusers)) is FLUX1_RGBA
    assert rgba_vae.rgba_kind(_state(latent=32, batch_norm=True, diffusers=diffusers)) is FLUX2_RGBA
    assert rgba_vae.is_diffusers_layout(_state(diffusers=diffusers)) is diffusers


def test_kinds_describe_the_host_latent():
    assert (FLUX1_RGBA.host_latent_channels, FLUX1_RGBA.downscale) == (16, 8)
    assert (FLUX2_RGBA.host_latent_channels, FLUX2_RGBA.downscale) == (128, 16)


def test_an_rgb_vae_is_refused_pointing_at_load_vae():
    with pytest.raises(RGBAVAEError, match="3 image channels in and 3 out.*Load VAE"):
        rgba_vae.rgba_kind(_state(3, 3), "ae.safetensors")


def test_half_widened_and_unknown_latents_are_refused():
    with pytest.raises(RGBAVAEError, match="4 image channels in and 3 out") as refused:
        rgba_vae.rgba_kind(_state(4, 3))
    assert "Load VAE" not in str(refused.value)
    with pytest.raises(RGBAVAEError, match="4 latent channels, which no supported model samples"):
        rgba_vae.rgba_kind(_state(latent=4))
    with pytest.raises(RGBAVAEError, match="32 latent channels, which"):  # FLUX.2's width without its statistics
        rgba_vae.rgba_kind(_state(latent=32))


def test_a_file_without_vae_convolutions_is_refused_naming_them():
    with pytest.raises(RGBAVAEError, match="no encoder.conv_in.weight, decoder.conv_out.weight, decoder.conv_in"):
        rgba_vae.rgba_kind({"blocks.0.weight": torch.zeros(1)}, "decoder.safetensors")


def test_ddconfig_is_fluxs_autoencoder_with_four_image_channels():
    config = rgba_vae.ddconfig(FLUX2_RGBA, _state(latent=32, batch_norm=True))
    assert (config["in_channels"], config["out_ch"], config["z_channels"], config["ch"]) == (4, 4, 32, 128)
    assert config["batch_norm_latent"] is True
    assert "batch_norm_latent" not in rgba_vae.ddconfig(FLUX1_RGBA, _state())


def test_quant_convolutions_move_to_the_top_and_identities_fill_their_absence():
    moved = rgba_vae.top_level_quant_convs({"encoder.quant_conv.weight": 1, "decoder.post_quant_conv.bias": 2,
                                            "encoder.conv_in.weight": 3})
    assert moved == {"quant_conv.weight": 1, "post_quant_conv.bias": 2, "encoder.conv_in.weight": 3}
    state = {k: v.to(torch.bfloat16) for k, v in _state().items()}
    filled = rgba_vae.with_identity_quant_convs(state, 16)
    x = torch.randn(1, 32, 3, 3, dtype=torch.bfloat16)
    out = torch.nn.functional.conv2d(x, filled["quant_conv.weight"], filled["quant_conv.bias"])
    assert out.dtype == torch.bfloat16 and torch.equal(out, x)  # exact in the file's own format
    assert filled["post_quant_conv.weight"].shape == (16, 16, 1, 1)
    assert rgba_vae.with_identity_quant_convs(filled, 16) is filled
