"""FLUX.1 on the real host: a reduced FLUX.1-dev checkpoint the host detects, the LayerDiffuse LoRA through
the host's own LoRA patching (every key, fused-qkv slices, isolation, weight, range), refusals, and the
transparent VAE's decode and encode nodes on FLUX latents."""

from __future__ import annotations

import comfy.model_base
import comfy.sample
import comfy.utils
import folder_paths
import pytest
import torch
from comfyui_layer_sketch.layer_model import host
from comfyui_layer_sketch.layer_model.transparent_codec import FLUX_CODEC, encoder_inputs
from comfyui_layer_sketch.nodes import NODE_CLASS_MAPPINGS
from support import fixtures, flux_models, layer_files
from support.flux_models import HIDDEN, SWAPPED_HALVES, diffusers_lora_targets, flux_conditioning, peft_lora
from support.host_models import small_vae, tiny_model

Apply = NODE_CLASS_MAPPINGS["LayerDiffuseApply"]
Decode = NODE_CLASS_MAPPINGS["LayerDiffuseDecode"]
Encode = NODE_CLASS_MAPPINGS["LayerDiffuseEncode"]
FLUX_MODE = "FLUX.1 transparent (LoRA)"
LORA_NAME = "layerlora.safetensors"


@pytest.fixture(scope="module")
def flux(fixture_cache):
    return flux_models.load_reduced_flux(fixture_cache)


@pytest.fixture
def lora(layer_folder) -> dict[str, torch.Tensor]:
    state = peft_lora(with_alpha=True)
    layer_files.save(state, layer_folder / LORA_NAME)
    return state


def sample(model, steps: int = 2, seed: int = 1, size: int = 8) -> torch.Tensor:
    latent = torch.zeros(1, 16, size, size)
    noise = comfy.sample.prepare_noise(latent, seed)
    return comfy.sample.sample(model, noise, steps, 1.0, "euler", "simple", flux_conditioning(1),
                               flux_conditioning(2), latent, seed=seed, disable_pbar=True)


def test_the_reduced_checkpoint_is_detected_as_flux1(flux):
    assert type(flux.model) is comfy.model_base.Flux
    config = flux.model.model_config.unet_config
    assert (config["depth"], config["depth_single_blocks"], config["hidden_size"]) == (1, 1, HIDDEN)
    assert config["guidance_embed"] is True and host.base_from_model(flux) == "FLUX"


def _rows_to_check(first: int, rows: int) -> list[int]:
    return sorted({first, first + 1, first + rows // 2, first + rows - 1})


def test_lora_adds_strength_times_up_down_on_every_target_including_fused_slices(flux, lora):
    targets = diffusers_lora_targets()
    checked = {}
    for path, (key, first, rows, _) in targets.items():
        weight = comfy.utils.get_attr(flux.model, key)
        checked[path] = weight[_rows_to_check(first, rows)].detach().clone()
    (patched,) = Apply().apply(flux, "auto", 0.7)
    assert sum(len(v) for v in patched.patches.values()) == len(targets), "every LoRA layer becomes a patch"
    assert set(patched.patches) == {key for key, *_ in targets.values()}
    patched.patch_model()
    try:
        for path, (key, first, rows, _) in targets.items():
            down, up = lora[f"{path}.lora_A.weight"], lora[f"{path}.lora_B.weight"]
            delta = (up @ down) * (float(lora[f"{path}.alpha"]) / down.shape[0])
            if path == SWAPPED_HALVES:  # diffusers (scale, shift) -> FLUX (shift, scale)
                delta = torch.cat([delta[HIDDEN:], delta[:HIDDEN]])
            picked = [r - first for r in _rows_to_check(first, rows)]
            merged = comfy.utils.get_attr(patched.model, key)[_rows_to_check(first, rows)]
            torch.testing.assert_close(merged, checked[path] + 0.7 * delta[picked], rtol=0, atol=2e-6,
                                       msg=lambda m, p=path: f"{p}: {m}")
    finally:
        patched.unpatch_model()
    for path, (key, first, rows, _) in targets.items():
        assert torch.equal(comfy.utils.get_attr(flux.model, key)[_rows_to_check(first, rows)], checked[path])


def test_patches_leave_the_base_bit_exact_and_weight_acts(flux, lora):
    before = sample(flux)
    during = sample(Apply().apply(flux, FLUX_MODE, 1.0)[0])
    after = sample(flux)
    assert torch.equal(before, after), "sampling the patched clone must not change the base model"
    assert torch.isfinite(during).all() and (during - before).abs().max() > 1e-3
    assert torch.equal(sample(Apply().apply(flux, FLUX_MODE, 0.0)[0]), before), "weight 0 is the model as it was"
    half = sample(Apply().apply(flux, FLUX_MODE, 0.5)[0])
    assert (half - during).abs().max() > 1e-4 and (half - before).abs().max() > 1e-4


def test_start_and_end_percent_gate_the_lora_by_sigma(flux, lora):
    merged = sample(Apply().apply(flux, FLUX_MODE, 1.0)[0], steps=1)
    gated = sample(Apply().apply(flux, FLUX_MODE, 1.0, 0.0, 0.9)[0], steps=1)  # the one step is in range
    torch.testing.assert_close(gated, merged, rtol=1e-3, atol=1e-3)  # on the activations vs in the weights
    base = sample(flux, steps=4)
    full = sample(Apply().apply(flux, FLUX_MODE, 1.0)[0], steps=4)
    early = sample(Apply().apply(flux, FLUX_MODE, 1.0, 0.0, 0.5)[0], steps=4)
    none = sample(Apply().apply(flux, FLUX_MODE, 1.0, 1.0, 1.0)[0], steps=4)
    assert (early - full).abs().max() > 1e-4 and (early - base).abs().max() > 1e-4
    assert torch.equal(none, base), "a range that starts at the end applies the LoRA to no step"
    assert torch.equal(sample(flux, steps=4), base)


def test_foreign_keys_are_refused_with_their_count(flux, layer_folder):
    state = peft_lora() | {"transformer.transformer_blocks.7.attn.to_q.lora_A.weight": torch.zeros(4, HIDDEN),
                           "transformer.transformer_blocks.7.attn.to_q.lora_B.weight": torch.zeros(HIDDEN, 4),
                           "lora_unet_down_blocks_0.lora_down.weight": torch.zeros(4, 8)}
    layer_files.save(state, layer_folder / LORA_NAME)
    with pytest.raises(ValueError, match=rf"3 of its {len(state)} keys match no weight .*nothing was applied"):
        Apply().apply(flux, FLUX_MODE, 1.0)


def test_a_lora_for_another_architecture_is_refused(flux, layer_folder):
    sdxl_lora = layer_files.sdxl_attention_lora(tiny_model("SDXL"))
    layer_files.save({k.replace("::lora::0", ".lora_B.weight").replace("::lora::1", ".lora_A.weight"): v
                      for k, v in sdxl_lora.items()}, layer_folder / LORA_NAME)
    with pytest.raises(ValueError, match=rf"{len(sdxl_lora)} of its {len(sdxl_lora)} keys match no weight"):
        Apply().apply(flux, FLUX_MODE, 1.0)


def test_models_of_other_families_are_refused_before_any_file_is_read(flux, layer_folder):
    with pytest.raises(ValueError, match="made for SD1.5 models, but the connected MODEL is FLUX"):
        Apply().apply(flux, "SD1.5 transparent (attention sharing)", 1.0)
    with pytest.raises(ValueError, match="made for FLUX models, but the connected MODEL is SD1.5"):
        Apply().apply(tiny_model("SD15"), FLUX_MODE, 1.0)
    with pytest.raises(ValueError, match=r"not SD1.5, SDXL or FLUX.1.*FLUX.2"):
        Apply().apply(flux_models.tiny_flux2(), "auto", 1.0)
    assert list(layer_folder.iterdir()) == [], "nothing was downloaded or converted"


@pytest.fixture
def flux_codec(layer_folder, fixture_cache):
    (layer_folder / "TransparentVAE.pth").symlink_to(flux_models.transparent_vae_pth(fixture_cache))
    return layer_folder


def _decode_inputs(size: int = 48) -> tuple[dict, torch.Tensor]:
    generator = torch.Generator().manual_seed(5)
    latent = torch.randn(1, 16, size // 8, size // 8, generator=generator)
    return {"samples": latent}, torch.rand(1, size, size, 3, generator=generator)


def test_decode_recognises_flux_from_the_model_or_the_latent(flux, flux_codec):
    samples, images = _decode_inputs()
    by_model = Decode().decode(samples, images, "auto", "2", 8, model=flux)
    by_latent = Decode().decode(samples, images, "auto", "2", 8)
    assert (flux_codec / "TransparentVAE.safetensors").exists(), "the pickle is converted once, beside it"
    rgba, mask, preview = by_model
    assert rgba.shape == (1, 48, 48, 4) and mask.shape == (1, 48, 48) and preview.shape == (1, 48, 48, 3)
    assert torch.equal(rgba, by_latent[0]) and rgba[..., 3].std() > 1e-3
    torch.testing.assert_close(mask, 1.0 - rgba[..., 3])


def test_decode_refuses_a_latent_of_the_wrong_family(flux_codec):
    samples, images = _decode_inputs()
    four = {"samples": torch.zeros(1, 4, 6, 6)}
    with pytest.raises(ValueError, match="The latent has 4 channels .*FLUX latents have 16"):
        Decode().decode(four, images, "FLUX", "1", 8)
    with pytest.raises(ValueError, match="The latent has 16 channels .*SD1.5 latents have 4"):
        Decode().decode(samples, images, "SD1.5", "1", 8)
    assert not (flux_codec / "TransparentVAE.safetensors").exists(), "refused before any weight is loaded"


def test_encode_adds_the_scaled_offset_in_posterior_std_units(flux_codec, fixture_cache):
    vae = flux_models.flux_vae(fixture_cache)
    generator = torch.Generator().manual_seed(3)
    rgba = torch.rand(1, 32, 32, 4, generator=generator)
    (latent,) = Encode().encode(rgba, vae, "auto")  # 'auto' reads FLUX from the 16-channel VAE
    assert latent["samples"].shape == (1, 16, 4, 4)
    rgb, alpha = rgba[..., :3].movedim(-1, 1), rgba[..., 3:].movedim(-1, 1)
    vae_rgb, encoder_input = encoder_inputs(rgb, alpha, FLUX_CODEC)
    mean, std = host.vae_posterior(vae, vae_rgb.movedim(1, -1))
    encoder = host.prepare(host.load_codec("encoder", "FLUX"))
    with torch.inference_mode():
        offset = encoder(encoder_input.to(next(encoder.parameters())))
    torch.testing.assert_close(latent["samples"], mean + std * offset.float() * 300.0, rtol=1e-4, atol=1e-3)
    with pytest.raises(ValueError, match="needs the FLUX.1 VAE"):
        Encode().encode(rgba, small_vae(), "FLUX")


def test_sketch_guidance_on_flux_is_refused_with_what_to_do(flux, fixture_cache, predictor_folder):
    (predictor_folder / "sd15.safetensors").symlink_to(fixtures.edge_predictor_file(fixture_cache))
    (predictor,) = NODE_CLASS_MAPPINGS["SketchGuidanceLoadPredictor"]().load("sd15.safetensors")
    sketch = torch.ones(1, 64, 64, 3)
    with pytest.raises(ValueError, match="supports SD1.5 and SDXL models; the connected MODEL is Flux.*checkpoint"):
        NODE_CLASS_MAPPINGS["SketchGuidanceApply"]().apply(flux, flux_models.flux_vae(fixture_cache), predictor,
                                                           sketch, 1.6, 0.5)


def test_a_lora_where_other_guides_put_it_is_used(flux, layer_folder, tmp_path, monkeypatch):
    loras = tmp_path / "loras"
    loras.mkdir()
    layer_files.save(peft_lora(), loras / LORA_NAME)  # the FLUX port's instructions use models/loras
    _, extensions = folder_paths.folder_names_and_paths["loras"]
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "loras", ([str(loras)], extensions))
    (patched,) = Apply().apply(flux, FLUX_MODE, 1.0)
    assert sum(len(v) for v in patched.patches.values()) == len(diffusers_lora_targets())
    assert list(layer_folder.iterdir()) == [], "used where it is, not downloaded or copied"
