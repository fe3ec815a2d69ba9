"""The RGBA VAEs' LoRAs on the real host: AlphaVAE's (FLUX.1, diffusers/PEFT keys) on the reduced FLUX.1-dev and
flux2-klein-alpha's (`diffusion_model.<BFL module>` keys) on a reduced FLUX.2 Klein Base 4B the host detects. The
host's own LoRA loader maps every key; Layer Diffuse Apply RGBA VAE LoRA adds strength x B @ A on each target,
refuses a file that only partly maps (counted, where the host's loader applies the part it can) and a model of
another family or width before any file is read."""

from __future__ import annotations

import comfy.model_base
import comfy.sample
import comfy.sd
import comfy.utils
import pytest
import safetensors
import torch
from comfyui_layer_sketch.nodes import NODE_CLASS_MAPPINGS
from support import flux_models, klein_models, layer_files
from support.flux_models import alphavae_lora, alphavae_lora_targets

from nodes import LoraLoaderModelOnly

ApplyLoRA = NODE_CLASS_MAPPINGS["LayerDiffuseApplyRGBAVAELoRA"]
ALPHAVAE, EXTRACT_4B, EXTRACT_9B = (f"{name}.safetensors" for name in (
    "alphavae_flux1_lora", "flux2_klein_alpha_extract_4b", "flux2_klein_alpha_extract_9b"))
ROWS = (0, 1, 777, -1)  # rows of each target compared (first, second, inside, last)
Targets = dict[str, tuple[str, int, int]]  # LoRA path -> (host weight key, first row, rows)
# 0.3.75 reads every FLUX.2 file with FLUX.2-dev's 48 heads, so a Klein (24 or 32 heads of 128) does not load there.
KLEIN_HOSTS = pytest.mark.newest_host


BF16 = {"dtype": torch.bfloat16}  # both models as their files hold them: half the memory of the host's fp32 on a CPU


@pytest.fixture(scope="module")
def flux(fixture_cache):
    return comfy.sd.load_diffusion_model(str(flux_models.reduced_flux_file(fixture_cache)), model_options=BF16)


@pytest.fixture(scope="module")
def klein(fixture_cache):
    return comfy.sd.load_diffusion_model(str(klein_models.reduced_klein_file(fixture_cache)), model_options=BF16)


def _alphavae_targets() -> Targets:
    return {path: (key, first, rows) for path, (key, first, rows, _) in alphavae_lora_targets().items()}


def _klein_targets() -> Targets:
    return {f"{klein_models.PREFIX}{module}": (f"diffusion_model.{module}.weight", 0, out)
            for module, (out, _) in klein_models.lora_targets().items()}


def _host_loader_patches(model, folder, name: str, state: dict[str, torch.Tensor]) -> int:
    """How many LoRA layers the host's own LoraLoaderModelOnly patches from the file (saved in the loras folder)."""
    layer_files.save(state, folder / name)
    (patched,) = LoraLoaderModelOnly().load_lora_model_only(model, name, 1.0)
    return sum(len(patches) for patches in patched.patches.values())


def _rows(first: int, rows: int) -> list[int]:
    return [first + r % rows for r in ROWS]


def _check_merged(model, name: str, state: dict[str, torch.Tensor], targets: Targets, strength: float) -> None:
    """Each target's rows in the patched clone are W + strength * B @ A (scale 1: no alpha tensors)."""
    before = {path: comfy.utils.get_attr(model.model, key)[_rows(first, rows)].detach().clone()
              for path, (key, first, rows) in targets.items()}
    (patched,) = ApplyLoRA().apply(model, name, strength)
    assert sum(len(v) for v in patched.patches.values()) == len(targets), "every LoRA layer becomes a patch"
    patched.patch_model()
    try:
        for path, (key, first, rows) in targets.items():
            delta = state[f"{path}.lora_B.weight"][[r % rows for r in ROWS]] @ state[f"{path}.lora_A.weight"]
            merged = comfy.utils.get_attr(patched.model, key)[_rows(first, rows)]
            # bf16 weights: the host merges in fp32 and rounds once (deltas are about 10% of the weights)
            torch.testing.assert_close(merged.float(), before[path].float() + strength * delta, rtol=2 ** -8,
                                       atol=1e-6, msg=lambda m, p=path: f"{p}: {m}")
    finally:
        patched.unpatch_model()
    for path, (key, first, rows) in targets.items():
        assert torch.equal(comfy.utils.get_attr(model.model, key)[_rows(first, rows)], before[path])


@KLEIN_HOSTS
def test_the_reduced_klein_is_detected_as_flux2_klein_4b(klein, fixture_cache):
    assert type(klein.model) is comfy.model_base.Flux2
    config = klein.model.model_config.unet_config
    assert (config["hidden_size"], config["num_heads"], config["context_in_dim"]) == (3072, 24, 7680)
    assert (config["depth"], config["depth_single_blocks"], config["guidance_embed"]) == (1, 1, False)
    with safetensors.safe_open(klein_models.reduced_klein_file(fixture_cache), "pt") as file:
        for module in klein_models.lora_targets():  # the file's weights, not a fresh initialisation
            assert torch.equal(comfy.utils.get_attr(klein.model, f"diffusion_model.{module}.weight"),
                               file.get_tensor(f"{module}.weight"))


@KLEIN_HOSTS
def test_the_reduced_klein_9b_is_detected_as_flux2_klein_9b(fixture_cache):
    """The Remove workflow's test model: Klein 9B's widths read from the file (32 heads, Qwen3-8B's 3 x 4096)."""
    path = klein_models.reduced_klein_file(fixture_cache, klein_models.KLEIN_9B)
    klein_9b = comfy.sd.load_diffusion_model(str(path), model_options=BF16)
    assert type(klein_9b.model) is comfy.model_base.Flux2
    config = klein_9b.model.model_config.unet_config
    assert (config["hidden_size"], config["num_heads"], config["context_in_dim"]) == (4096, 32, 12288)
    assert (config["depth"], config["depth_single_blocks"], config["guidance_embed"]) == (1, 1, False)


def test_alphavae_lora_every_key_through_the_host_loader_and_the_node(flux, layer_folder, lora_folder):
    state = alphavae_lora()
    assert len(state) == 2 * (12 + 3)  # 12 modules per double block, the 3 attention inputs per single block
    assert _host_loader_patches(flux, lora_folder, ALPHAVAE, state) == len(state) // 2
    _check_merged(flux, ALPHAVAE, state, _alphavae_targets(), 0.7)  # found in models/loras, as published
    assert list(layer_folder.iterdir()) == [], "used where it is, not downloaded or copied"


@KLEIN_HOSTS
def test_klein_lora_every_key_through_the_host_loader_and_the_node(klein, layer_folder, lora_folder):
    state = klein_models.klein_lora(klein_models.lora_targets())
    assert len(state) == 2 * (8 + 2)
    assert _host_loader_patches(klein, lora_folder, EXTRACT_4B, state) == len(state) // 2
    _check_merged(klein, EXTRACT_4B, state, _klein_targets(), 1.3)


def _flux2_conditioning(seed: int) -> list:
    generator = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, 8, klein_models.CONTEXT, generator=generator), {}]]


def _sample_klein(model, steps: int) -> torch.Tensor:
    latent = torch.zeros(1, klein_models.LATENT_CHANNELS, 4, 4)
    noise = comfy.sample.prepare_noise(latent, 1)
    return comfy.sample.sample(model, noise, steps, 1.0, "euler", "simple", _flux2_conditioning(1),
                               _flux2_conditioning(2), latent, seed=1, disable_pbar=True)


@KLEIN_HOSTS
def test_klein_lora_over_part_of_the_sampling(klein, layer_folder):
    layer_files.save(klein_models.klein_lora(klein_models.lora_targets(), scale=0.05), layer_folder / EXTRACT_4B)
    base = _sample_klein(klein, 1)
    merged = _sample_klein(ApplyLoRA().apply(klein, EXTRACT_4B, 1.0)[0], 1)
    gated = _sample_klein(ApplyLoRA().apply(klein, EXTRACT_4B, 1.0, 0.0, 0.9)[0], 1)  # the one step is in range
    change, gap = (merged - base).abs().mean(), (gated - merged).abs().mean()
    # on the activations vs in the weights: the same LoRA up to bf16 rounding
    assert change > 0.1 and gap < 0.01 * change  # measured: 0.71 and 0.0026
    assert torch.equal(_sample_klein(ApplyLoRA().apply(klein, EXTRACT_4B, 1.0, 1.0, 1.0)[0], 1), base)


@KLEIN_HOSTS
def test_the_published_klein_layout_on_fewer_blocks_is_refused_counted(klein, layer_folder, lora_folder):
    full = klein_models.klein_lora(klein_models.lora_targets(*klein_models.KLEIN_4B_BLOCKS), rank=2)
    assert len(full) == 2 * 80  # the 80 adapted modules its README states
    assert _host_loader_patches(klein, lora_folder, "partial.safetensors", full) == 10, "the host applies a part"
    layer_files.save(full, layer_folder / EXTRACT_4B)
    with pytest.raises(ValueError, match=r"140 of its 160 keys match no weight of the connected Flux2 model .*nothing "
                                         r"was applied. It should be flux2-klein-alpha's Extract-4B"):
        ApplyLoRA().apply(klein, EXTRACT_4B, 1.0)


def test_a_truncated_or_foreign_file_is_refused_counted(flux, layer_folder):
    state = alphavae_lora(rank=4)
    del state["transformer.transformer_blocks.0.attn.to_q.lora_B.weight"]
    layer_files.save(state, layer_folder / ALPHAVAE)
    with pytest.raises(ValueError, match=rf"1 of its {len(state)} keys match no weight .*AlphaVAE's FLUX.1-dev LoRA"):
        ApplyLoRA().apply(flux, ALPHAVAE, 1.0)
    foreign = klein_models.klein_lora(klein_models.lora_targets(), rank=4)  # FLUX.2's BFL names on FLUX.1
    layer_files.save(foreign, layer_folder / ALPHAVAE)
    with pytest.raises(ValueError, match=r"12 of its 20 keys match no weight of the connected Flux model"):
        ApplyLoRA().apply(flux, ALPHAVAE, 1.0)


def test_a_klein_lora_on_flux1_is_refused_before_any_file_is_read(flux, layer_folder):
    with pytest.raises(ValueError, match=r"a LoRA for FLUX.2 Klein Base 4B, but the connected MODEL is Flux\. Load"):
        ApplyLoRA().apply(flux, EXTRACT_4B, 1.0)
    assert list(layer_folder.iterdir()) == []


@KLEIN_HOSTS
def test_another_family_or_width_on_klein_is_refused_before_any_file_is_read(klein, layer_folder):
    with pytest.raises(ValueError, match=r"a LoRA for FLUX.1-dev, but the connected MODEL is Flux2\. Load FLUX.1-dev"):
        ApplyLoRA().apply(klein, ALPHAVAE, 1.0)
    with pytest.raises(ValueError, match=r"Klein Base 9B \(width 4096\), but the connected FLUX.2 model is 3072 wide"):
        ApplyLoRA().apply(klein, EXTRACT_9B, 1.0)
    assert list(layer_folder.iterdir()) == []
