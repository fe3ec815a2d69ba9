"""RGBA VAEs (AlphaVAE, flux2-klein-alpha) as the host's own VAE: random files in both published key layouts, loaded
by layer_model/host_rgba_vae.py and compared with what the host itself does with the RGB VAE of the same weights
(its own detection, VAE.encode and VAE.decode), so channel order, the [0, 1] mapping, cropping and the memory
estimates are held against the host, not against a second implementation.
"""

from __future__ import annotations

import comfy.model_management as mm
import comfy.model_patcher
import comfy.sd
import pytest
import safetensors.torch
import torch
from comfy.ldm.modules.diffusionmodules.model import Decoder, Encoder
from comfyui_layer_sketch.layer_model import host_rgba_vae
from comfyui_layer_sketch.layer_model.rgba_vae import RGBAVAEError
from comfyui_layer_sketch.layer_model.weights import WeightFileError
from comfyui_layer_sketch.nodes import NODE_CLASS_MAPPINGS
from support import fixtures, rgba_vaes
from support.flux_models import flux_vae_file

Load, Decode, Encode = (NODE_CLASS_MAPPINGS[f"LayerDiffuse{name}"] for name in ("LoadRGBAVAE", "RGBAVAEDecode",
                                                                                "RGBAVAEEncode"))
KINDS = ("alphavae", "flux2")
LAYOUTS = ("host", "diffusers")
LATENT = {"alphavae": (16, 8), "flux2": (128, 16)}  # host latent channels, pixels per latent pixel


@pytest.fixture(scope="module")
def files(fixture_cache):
    return {(kind, layout): rgba_vaes.rgba_vae_file(fixture_cache, kind, layout)
            for kind in KINDS for layout in LAYOUTS}


@pytest.fixture(scope="module")
def vaes(files):
    with torch.inference_mode():  # as Load VAE runs inside a graph
        return {key: host_rgba_vae.load_rgba_vae(str(path)) for key, path in files.items()}


@pytest.fixture(scope="module")
def rgb_twins(files):
    """The host's own VAEs of the same weights with 3 channels: RGB, and alpha in red's place."""
    state = safetensors.torch.load_file(str(files[("alphavae", "host")]))
    flux2 = safetensors.torch.load_file(str(files[("flux2", "host")]))
    with torch.inference_mode():
        return {(kind, alpha): comfy.sd.VAE(sd=rgba_vaes.rgb_counterpart(source, alpha))
                for kind, source in (("alphavae", state), ("flux2", flux2)) for alpha in (False, True)}


def _latent(kind: str, height: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(2, LATENT[kind][0], height, width, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kind", KINDS)
def test_every_tensor_of_the_file_lands_in_the_host_autoencoder(files, vaes, kind, layout):
    vae = vaes[(kind, layout)]
    model = vae.first_stage_model
    assert isinstance(vae, comfy.sd.VAE) and isinstance(vae.patcher, comfy.model_patcher.ModelPatcher)
    assert type(model.encoder) is Encoder and type(model.decoder) is Decoder
    assert (model.encoder.conv_in.in_channels, model.decoder.conv_out.out_channels) == (4, 4)
    assert (vae.output_channels, vae.latent_channels, vae.spacial_compression_decode()) == (4, *LATENT[kind])
    host_layout = safetensors.torch.load_file(str(files[(kind, "host")]))
    loaded = model.state_dict()
    for key, value in host_layout.items():
        key = key.replace("encoder.quant_conv", "quant_conv").replace("decoder.post_quant_conv", "post_quant_conv")
        assert torch.equal(loaded[key].to(value.dtype), value), key
    assert (model.bn is not None) == (kind == "flux2")


@pytest.mark.parametrize("kind", KINDS)
def test_the_diffusers_layout_is_what_the_host_converter_reads_back(files, kind):
    """Guards the fixture: the host's own diffusers map turns the test's diffusers names into the host names."""
    import comfy.diffusers_convert

    diffusers = safetensors.torch.load_file(str(files[(kind, "diffusers")]))
    host = safetensors.torch.load_file(str(files[(kind, "host")]))
    converted = comfy.diffusers_convert.convert_vae_state_dict(diffusers)
    expected = {k.replace("encoder.quant_conv", "quant_conv").replace("decoder.post_quant_conv", "post_quant_conv"): v
                for k, v in host.items()}
    assert converted.keys() == expected.keys()
    assert all(torch.equal(converted[k], expected[k]) for k in expected)


@pytest.mark.parametrize("kind", KINDS)
def test_the_vae_carries_the_host_settings_of_its_rgb_family(vaes, rgb_twins, kind):
    vae, twin = vaes[(kind, "host")], rgb_twins[(kind, False)]
    for attribute in ("latent_channels", "downscale_ratio", "upscale_ratio", "latent_dim", "working_dtypes",
                      "vae_dtype", "device"):
        assert getattr(vae, attribute) == getattr(twin, attribute), attribute
    latent, pixels = (1, LATENT[kind][0], 32, 48), (1, 4, 256, 384)
    assert vae.memory_used_decode(latent, torch.float32) == twin.memory_used_decode(latent, torch.float32)
    assert vae.memory_used_encode(pixels, torch.float32) == twin.memory_used_encode(pixels, torch.float32)


@pytest.mark.parametrize("kind", KINDS)
def test_decode_gives_straight_rgb_then_alpha_as_the_host_maps_them(vaes, rgb_twins, kind):
    """Odd latent sizes; colour is the host RGB decode of the same weights, alpha its decode of the alpha row."""
    latent = _latent(kind, 3, 5)
    with torch.inference_mode():
        rgba = vaes[(kind, "diffusers")].decode(latent)
        rgb = rgb_twins[(kind, False)].decode(latent)
        alpha_in_red = rgb_twins[(kind, True)].decode(latent)
    scale = LATENT[kind][1]
    assert rgba.shape == (2, 3 * scale, 5 * scale, 4)
    assert 0.0 <= float(rgba.min()) and float(rgba.max()) <= 1.0
    torch.testing.assert_close(rgba[..., :3], rgb, atol=1e-5, rtol=0)
    torch.testing.assert_close(rgba[..., 3], alpha_in_red[..., 0], atol=1e-5, rtol=0)
    assert 0.05 < float(rgba[..., 3].std())  # alpha varies: not a constant that any order would match


@pytest.mark.parametrize("kind", KINDS)
def test_both_layouts_decode_alike(vaes, kind):
    latent = _latent(kind, 2, 3, seed=1)
    with torch.inference_mode():
        torch.testing.assert_close(vaes[(kind, "host")].decode(latent), vaes[(kind, "diffusers")].decode(latent))


@pytest.mark.parametrize("kind", KINDS)
def test_encode_reads_alpha_and_crops_odd_sizes_as_the_host(vaes, rgb_twins, kind):
    generator = torch.Generator().manual_seed(2)
    rgb = torch.rand(1, 37, 53, 3, generator=generator)
    half = torch.full_like(rgb[..., :1], 0.5)  # alpha 0.5 is 0 after the host's input mapping: no alpha term
    vae = vaes[(kind, "host")]
    with torch.inference_mode():
        latent = host_rgba_vae.encode_rgba(vae, rgb, half)
        expected = rgb_twins[(kind, False)].encode(rgb)
        opaque = host_rgba_vae.encode_rgba(vae, rgb, torch.ones_like(half))
    scale = LATENT[kind][1]
    assert latent.shape == (1, LATENT[kind][0], 37 // scale, 53 // scale) == expected.shape
    torch.testing.assert_close(latent, expected, atol=1e-4, rtol=1e-4)
    assert float((opaque - latent).abs().max()) > 1e-2  # alpha is an input


@pytest.mark.parametrize("kind", KINDS)
def test_decode_runs_under_host_model_management(vaes, kind):
    vae = vaes[(kind, "host")]
    with torch.inference_mode():
        host_rgba_vae.decode_rgba(vae, _latent(kind, 2, 2))
    assert any(loaded.model is vae.patcher for loaded in mm.current_loaded_models)
    assert vae.patcher.model_size() == mm.module_size(vae.first_stage_model) > 0
    assert vae.memory_used_decode((1, LATENT[kind][0], 64, 64), vae.vae_dtype) > 0


def test_an_rgb_vae_file_is_refused_naming_load_vae(fixture_cache):
    with pytest.raises(RGBAVAEError, match=r"3 image channels in and 3 out.*Load VAE"):
        host_rgba_vae.load_rgba_vae(str(flux_vae_file(fixture_cache)))


def test_a_truncated_file_is_refused_saying_so(files, tmp_path):
    broken = fixtures.truncated_copy(files[("alphavae", "diffusers")], tmp_path / "alphavae.safetensors")
    with pytest.raises(WeightFileError, match="truncated or corrupt"):
        host_rgba_vae.load_rgba_vae(str(broken))


def test_a_file_missing_tensors_is_refused_before_the_host_builds_it(files, tmp_path):
    state = safetensors.torch.load_file(str(files[("flux2", "host")]))
    del state["decoder.mid.attn_1.q.weight"]
    with pytest.raises(RGBAVAEError, match=r"flux2-klein-alpha.*1 tensors missing"):
        host_rgba_vae.vae_from_state(state, "flux2.safetensors")


# --- The nodes ----------------------------------------------------------------------------------------------------

def test_the_loader_lists_the_published_files_then_the_vae_folder_and_loads(files, vae_folder):
    import shutil

    shutil.copy(files[("flux2", "diffusers")], vae_folder / "my_rgba.safetensors")
    choices = Load.INPUT_TYPES()["required"]["vae_name"][0]
    assert choices[:2] == ["alphavae_flux1_rgba_vae.safetensors", "flux2_klein_alpha_rgba_vae.safetensors"]
    assert "my_rgba.safetensors" in choices
    with torch.inference_mode():
        (vae,) = Load().load("my_rgba.safetensors")
    assert (vae.output_channels, vae.latent_channels) == (4, 128)


def test_a_missing_published_file_names_where_it_comes_from(layer_folder, vae_folder):
    with pytest.raises(WeightFileError, match="https://huggingface.co/trmz/flux2-klein-alpha/resolve/main/vae/"
                                              "diffusion_pytorch_model.safetensors"):
        Load().load("flux2_klein_alpha_rgba_vae.safetensors")


def test_decode_node_outputs_chain_with_the_composite_node(vaes):
    from comfyui_layer_sketch.nodes.layers import LayerDiffuseComposite

    with torch.inference_mode():
        rgba, mask, preview = Decode().decode({"samples": _latent("alphavae", 3, 4)}, vaes[("alphavae", "host")])
        composite, composite_mask, _ = LayerDiffuseComposite().composite(torch.zeros(2, 24, 32, 4), rgba)
    assert rgba.shape == (2, 24, 32, 4) and preview.shape == (2, 24, 32, 3)
    torch.testing.assert_close(mask, 1.0 - rgba[..., 3])  # the host's MASK: 1 where transparent
    torch.testing.assert_close(composite, rgba)  # over a transparent layer: itself, straight colour kept
    torch.testing.assert_close(composite_mask, mask)


def test_decode_node_refuses_an_rgb_vae_and_a_foreign_latent(vaes, rgb_twins):
    with pytest.raises(RGBAVAEError, match="3 image channels"):
        Decode().decode({"samples": _latent("alphavae", 2, 2)}, rgb_twins[("alphavae", False)])
    with pytest.raises(RGBAVAEError, match="decodes latents with 16 channels"):
        Decode().decode({"samples": torch.zeros(1, 4, 8, 8)}, vaes[("alphavae", "host")])


def test_encode_node_takes_rgba_or_rgb_with_mask_or_opaque_rgb(vaes):
    vae = vaes[("flux2", "host")]
    generator = torch.Generator().manual_seed(3)
    rgba = torch.rand(1, 32, 48, 4, generator=generator)
    with torch.inference_mode():
        (from_rgba,) = Encode().encode(rgba, vae)
        (from_mask,) = Encode().encode(rgba[..., :3], vae, mask=1.0 - rgba[..., 3])
        (opaque,) = Encode().encode(rgba[..., :3], vae)
        (explicit,) = Encode().encode(torch.cat([rgba[..., :3], torch.ones_like(rgba[..., :1])], -1), vae)
    assert from_rgba["samples"].shape == (1, 128, 2, 3)
    torch.testing.assert_close(from_mask["samples"], from_rgba["samples"])
    torch.testing.assert_close(opaque["samples"], explicit["samples"])


def test_encode_node_gives_the_masked_area_the_alpha_asked_for(vaes):
    """flux2-klein-alpha's Remove reference: the photo at alpha 0.5 inside the mask, opaque outside; a soft mask
    edge in between (alpha = 1 - mask x (1 - masked_alpha)), and 0 leaves the mask's transparency as it was."""
    vae = vaes[("flux2", "host")]
    rgb = torch.rand(1, 32, 48, 3, generator=torch.Generator().manual_seed(5))
    mask = torch.zeros(1, 32, 48)
    mask[:, 8:24, 16:32], mask[:, 8:24, 32:40] = 1.0, 0.5  # the object, and a soft edge beside it
    expected_alpha = torch.ones(1, 32, 48, 1)
    expected_alpha[:, 8:24, 16:32], expected_alpha[:, 8:24, 32:40] = 0.5, 0.75
    with torch.inference_mode():
        (half,) = Encode().encode(rgb, vae, mask=mask, masked_alpha=0.5)
        (default,) = Encode().encode(rgb, vae, mask=mask)
        (opaque,) = Encode().encode(rgb, vae, mask=mask, masked_alpha=1.0)
        expected = host_rgba_vae.encode_rgba(vae, rgb, expected_alpha)
        transparent = host_rgba_vae.encode_rgba(vae, rgb, 1.0 - mask.unsqueeze(-1))
        (unmasked,) = Encode().encode(rgb, vae)
    torch.testing.assert_close(half["samples"], expected)
    assert torch.equal(default["samples"], transparent), "the default encodes the mask's transparency as before"
    torch.testing.assert_close(opaque["samples"], unmasked["samples"])
    assert float((half["samples"] - default["samples"]).abs().max()) > 1e-2  # alpha is an input of the VAE
    with pytest.raises(ValueError, match="masked_alpha is an alpha value from 0 to 1, got 1.5"):
        Encode().encode(rgb, vae, mask=mask, masked_alpha=1.5)


def test_decode_node_takes_the_hosts_qwen_image_layered_vae():
    """The host's own 4-channel Wan VAE (Qwen-Image-Layered's, in core since 0.3.76): the decoded frames become
    batch entries exactly as the host's VAE Decode gives them, with the MASK beside them."""
    import inspect

    from comfy.ldm.wan.vae import WanVAE
    from support.host_models import randomize

    import nodes as host_nodes

    if "image_channels" not in inspect.signature(WanVAE).parameters:
        pytest.skip("this host has no 4-channel Wan VAE (Qwen-Image-Layered came after it)")
    model = WanVAE(dim=16, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                   temperal_downsample=[False, True, True], image_channels=4, conv_out_channels=4, dropout=0.0)
    randomize(model, 0)
    with torch.inference_mode():
        vae = comfy.sd.VAE(sd=model.state_dict())
        samples = {"samples": torch.randn(1, 16, 3, 2, 3, generator=torch.Generator().manual_seed(4))}
        rgba, mask, _ = Decode().decode(samples, vae)
        (expected,) = host_nodes.VAEDecode().decode(vae, samples)
    assert vae.output_channels == 4 and rgba.shape == expected.shape and rgba.shape[1:] == (16, 24, 4)
    torch.testing.assert_close(rgba, expected)
    torch.testing.assert_close(mask, 1.0 - expected[..., 3])


@pytest.mark.parametrize("kind", KINDS)
def test_the_codec_trainer_refuses_an_rgba_vae_naming_its_channels(vaes, kind):
    """Its codecs are trained through an RGB VAE: an RGBA one of the same latent space is no substitute."""
    from comfyui_layer_sketch.layer_model.host_vae import candidate_spaces

    with pytest.raises(ValueError, match="4 image channels"):
        candidate_spaces(vaes[(kind, "host")])
