"""LayerDiffusion's SDXL diffusers set in the real host: offsets keyed by diffusers UNet names patched as W + dW
through the host's key map, its codec through Layer Diffuse Decode/Encode, and what is refused."""

from __future__ import annotations

import shutil

import comfy.model_patcher
import comfy.supported_models
import comfy.utils
import pytest
import safetensors.torch
import torch
from comfyui_layer_sketch.layer_model import host, host_patches
from comfyui_layer_sketch.layer_model.modes import transparent_mode
from comfyui_layer_sketch.layer_model.weights import WeightFileError
from comfyui_layer_sketch.nodes import NODE_CLASS_MAPPINGS
from support import diffusers_set, fixtures, layer_files
from support.host_models import NARROW_SDXL_UNET, SDXL_FULL_UNET, random_model, small_vae, tiny_model
from support.layer_modes import sample

Apply, Decode, Encode = (NODE_CLASS_MAPPINGS[n] for n in ("LayerDiffuseApply", "LayerDiffuseDecode",
                                                          "LayerDiffuseEncode"))
MODE, CODEC = "SDXL transparent (diffusers set)", "published (SDXL diffusers set)"
ATTN = "ld_diffusers_sdxl_attn.safetensors"
DECODER, ENCODER = (f"ld_diffusers_sdxl_vae_transparent_{kind}.safetensors" for kind in ("decoder", "encoder"))


@pytest.fixture
def narrow_sdxl():
    return random_model("SDXL", NARROW_SDXL_UNET)


@pytest.fixture
def attn_folder(layer_folder, fixture_cache):
    shutil.copy(diffusers_set.attn_file(fixture_cache), layer_folder / ATTN)
    return layer_folder


def _weight(model, key: str) -> torch.Tensor:
    return comfy.utils.get_attr(model.model, key).detach().clone()


def test_every_offset_is_added_to_its_weight(attn_folder, narrow_sdxl):
    offsets = safetensors.torch.load_file(str(attn_folder / ATTN))
    names = diffusers_set.offset_names(*diffusers_set.NARROW_SDXL)
    base = {key: _weight(narrow_sdxl, key) for key, _ in names.values()}
    untouched = "diffusion_model.middle_block.1.transformer_blocks.0.attn2.to_k.weight"
    (patched,) = Apply().apply(narrow_sdxl, MODE, 0.7)
    assert len(patched.patches) == len(offsets) == len(names) == 6 * 11
    patched.patch_model()
    try:
        merged = {key: _weight(patched, key) for key, _ in names.values()}
        assert torch.equal(_weight(patched, untouched), _weight(narrow_sdxl, untouched))
    finally:
        patched.unpatch_model()
    for name, (key, _) in names.items():
        torch.testing.assert_close(merged[key], base[key] + 0.7 * offsets[name].float(), rtol=0, atol=1e-6)
    for key, weight in base.items():
        assert torch.equal(_weight(narrow_sdxl, key), weight), "the base model must be restored"


def test_the_patch_samples_with_a_range_and_leaves_the_base_untouched(attn_folder, narrow_sdxl):
    before = sample(narrow_sdxl, steps=4)
    merged = sample(Apply().apply(narrow_sdxl, MODE, 1.0)[0], steps=4)
    early = sample(Apply().apply(narrow_sdxl, MODE, 1.0, 0.0, 0.5)[0], steps=4)
    assert torch.isfinite(merged).all() and (merged - before).abs().max() > 1e-4
    assert (early - merged).abs().max() > 1e-5 and (early - before).abs().max() > 1e-5
    assert torch.equal(sample(narrow_sdxl, steps=4), before)


def test_the_host_map_covers_every_offset_of_the_full_sdxl_layout():
    config = comfy.supported_models.SDXL(dict(SDXL_FULL_UNET))
    with torch.device("meta"):
        base = config.get_model({}, "", device=torch.device("meta"))
    model = comfy.model_patcher.ModelPatcher(base, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))
    names = diffusers_set.offset_names(*diffusers_set.FULL_SDXL)
    assert len(names) == 420
    key_map = host_patches.diffusers_key_map(model)
    assert {name: key_map.get(name) for name in names} == {name: key for name, (key, _) in names.items()}
    state = {name: torch.empty(shape, device="meta") for name, (_, shape) in names.items()}
    deltas = host_patches.diffusers_deltas(model, transparent_mode(MODE, "SDXL"), state, ATTN)
    assert len(deltas) == 420
    state["mid_block.attentions.0.transformer_blocks.9.attn1.to_q.weight"] = torch.empty(1280, 640, device="meta")
    with pytest.raises(ValueError, match=r"does not fit the connected model: 1 of its 420 weights"):
        host_patches.diffusers_deltas(model, transparent_mode(MODE, "SDXL"), state, ATTN)


def test_a_truncated_file_a_stray_key_and_another_model_are_refused(layer_folder, fixture_cache, narrow_sdxl):
    fixtures.truncated_copy(diffusers_set.attn_file(fixture_cache), layer_folder / ATTN)
    with pytest.raises(WeightFileError, match="truncated or corrupt"):
        Apply().apply(narrow_sdxl, MODE, 1.0)
    offsets = diffusers_set.random_offsets()
    layer_files.save(offsets | {"down_blocks.9.attentions.0.proj_in.weight": torch.zeros(2, 2)}, layer_folder / ATTN)
    with pytest.raises(ValueError, match=rf"1 of its {len(offsets) + 1} keys name no weight of the connected SDXL "
                                         r"model's UNet in diffusers names \(e.g. \['down_blocks.9"):
        Apply().apply(narrow_sdxl, MODE, 1.0)
    names = diffusers_set.offset_names(*diffusers_set.NARROW_SDXL)
    layer_files.save({f"{names[name][0]}::diff::0": v for name, v in offsets.items()}, layer_folder / ATTN)
    with pytest.raises(ValueError, match=rf"{len(offsets)} of its {len(offsets)} keys name no weight"):
        Apply().apply(narrow_sdxl, MODE, 1.0)  # the v1 key format under this name
    with pytest.raises(ValueError, match="made for SDXL models, but the connected MODEL is SD1.5"):
        Apply().apply(tiny_model("SD15"), MODE, 1.0)


@pytest.fixture
def set_codecs(layer_folder, fixture_cache):
    """Random codecs in the published layout under the diffusers set's names only (v1's are absent)."""
    shutil.copy(fixtures.decoder_file(fixture_cache), layer_folder / DECODER)
    shutil.copy(fixtures.encoder_file(fixture_cache), layer_folder / ENCODER)
    return layer_folder


def test_decode_offers_and_loads_the_set_codec_for_sdxl(set_codecs):
    assert CODEC in Decode.INPUT_TYPES()["optional"]["codec"][0] and CODEC in host.codec_choices()
    generator = torch.Generator().manual_seed(0)
    samples = {"samples": torch.randn(1, 4, 8, 8, generator=generator)}
    images = torch.rand(1, 64, 64, 3, generator=generator)
    rgba, mask, _ = Decode().decode(samples, images, "auto", "1", 8, model=tiny_model("SDXL"), codec=CODEC)
    assert rgba.shape == (1, 64, 64, 4) and rgba[..., 3].std() > 1e-3
    with pytest.raises(WeightFileError, match="vae_transparent_decoder.safetensors"):  # v1's own is not in the folder
        Decode().decode(samples, images, "auto", "1", 8, model=tiny_model("SDXL"))
    with pytest.raises(ValueError, match=r"published SDXL codec \(diffusers set\) was trained for SDXL latents, but "
                                         r"the connected MODEL \(SD15\) samples SD1.5"):
        Decode().decode(samples, images, "auto", "1", 8, model=tiny_model("SD15"), codec=CODEC)


def test_encode_scales_the_set_offset_by_300(set_codecs):
    shutil.copy(set_codecs / ENCODER, set_codecs / "vae_transparent_encoder.safetensors")  # v1's name, same weights
    vae, image = small_vae(), torch.rand(1, 64, 64, 4, generator=torch.Generator().manual_seed(3))
    image[..., 3] = (image[..., 3] > 0.5).float()
    (with_set,) = Encode().encode(image, vae, "SDXL", codec=CODEC)
    (with_v1,) = Encode().encode(image, vae, "SDXL")
    mean, _ = host.vae_posterior(vae, 0.5 + (image[..., :3] - 0.5) * image[..., 3:])  # the grey composite's
    torch.testing.assert_close(with_set["samples"] - mean, 300.0 * (with_v1["samples"] - mean), atol=1e-3, rtol=1e-4)
    assert (with_v1["samples"] - mean).abs().max() > 1e-4
    with pytest.raises(ValueError, match="sd_version is SD1.5"):
        Encode().encode(image, vae, "SD1.5", codec=CODEC)


def test_published_follows_the_set_the_connected_model_carries(attn_folder, set_codecs, fixture_cache, narrow_sdxl):
    """Decode and Encode given the MODEL patched with the set: 'published' means the set's codec, as chosen by
    name; on the unpatched MODEL it means v1's (here another random decoder, so that the two differ)."""
    shutil.copy(fixtures.decoder_file(fixture_cache, seed=1), set_codecs / "vae_transparent_decoder.safetensors")
    shutil.copy(set_codecs / ENCODER, set_codecs / "vae_transparent_encoder.safetensors")
    (patched,) = Apply().apply(narrow_sdxl, MODE, 1.0)
    generator = torch.Generator().manual_seed(2)
    samples = {"samples": torch.randn(1, 4, 8, 8, generator=generator)}
    images = torch.rand(1, 64, 64, 3, generator=generator)
    followed, _, _ = Decode().decode(samples, images, "auto", "1", 8, model=patched)
    named, _, _ = Decode().decode(samples, images, "auto", "1", 8, model=narrow_sdxl, codec=CODEC)
    v1, _, _ = Decode().decode(samples, images, "auto", "1", 8, model=narrow_sdxl)
    torch.testing.assert_close(followed, named)
    assert (followed[..., 3] - v1[..., 3]).abs().max() > 1e-3, "the unpatched MODEL keeps v1's codec"
    vae, image = small_vae(), torch.rand(1, 64, 64, 4, generator=generator)
    (encoded,) = Encode().encode(image, vae, "auto", model=patched)
    (by_name,) = Encode().encode(image, vae, "auto", model=narrow_sdxl, codec=CODEC)
    torch.testing.assert_close(encoded["samples"], by_name["samples"])
