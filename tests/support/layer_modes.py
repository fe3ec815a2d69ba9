"""The SD1.5 LayerDiffusion modes on a small host model, applied as the nodes apply them, and a sampler call."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import comfy.sample
import comfy.supported_models
import torch
from comfyui_layer_sketch.nodes import NODE_CLASS_MAPPINGS

from . import fixtures, layer_files

SD15_MODES = ("transparent", "joint", "fg2bg")
_FILES = {"transparent": ("layer_sd15_transparent_attn.safetensors", 1, False),
          "joint": ("layer_sd15_joint.safetensors", 3, False),
          "fg2bg": ("layer_sd15_fg2bg.safetensors", 2, True)}


def frames_of(mode: str) -> int:
    return _FILES[mode][1]


def _layout_digest(model) -> str:
    """The UNet's layout and a checksum of weights no patch replaces: what the generated files are built from.

    (Not the whole state dict: units of an earlier sampled clone may still be patched into the model.)
    """
    unet = model.model.diffusion_model
    ends = [unet.input_blocks[0][0].weight, unet.out[2].weight]
    layout = (sorted(model.model.model_config.unet_config.items(), key=str), [round(float(w.sum()), 4) for w in ends])
    return hashlib.sha1(repr(layout).encode()).hexdigest()[:16]


def _install_cached(folder: Path, model, files: dict[str, Callable[[], dict]]) -> None:
    """Link generated files into `folder`; each is made once per model layout, in the fixture cache.

    Tests of many modes and samplers need the same few hundred MB of files: one copy on disk, not one per test.
    """
    cache = fixtures.cache_dir() / "layer_modes" / _layout_digest(model)
    cache.mkdir(parents=True, exist_ok=True)
    for name, make in files.items():
        cached = cache / name
        if not cached.exists():
            fixtures._save(make(), cached)
        if not (folder / name).exists():
            (folder / name).symlink_to(cached)


def install_mode_files(folder: Path, model) -> None:
    """Random weight files for every SD1.5 mode, built for `model`'s own attention modules."""
    _install_cached(folder, model, {
        name: (lambda f=frames, c=control: layer_files.attention_sharing(model, f, c))
        for name, frames, control in _FILES.values()})


def _prompt(seed: int, width: int = 768):
    return [[torch.randn(1, 77, width, generator=torch.Generator().manual_seed(seed)), {}]]


SDXL_MODES = ("SDXL transparent (attention injection)", "SDXL transparent (conv injection)")


def install_sdxl_files(folder: Path, model) -> None:
    _install_cached(folder, model, {
        "layer_xl_transparent_attn.safetensors": lambda: layer_files.sdxl_attention_lora(model),
        "layer_xl_transparent_conv.safetensors": lambda: layer_files.sdxl_conv_diff(model)})


def apply_mode(model, mode: str, weight: float = 1.0, start: float = 0.0, end: float = 1.0, size: int = 8):
    """`mode` applied through its node: the joint mode with its own prompts, fg2bg with a condition image
    for a `size`x`size` latent; an SDXL mode by its name."""
    if mode in SDXL_MODES:
        return NODE_CLASS_MAPPINGS["LayerDiffuseApply"]().apply(model, mode, weight, start, end)[0]
    if mode == "transparent":
        return NODE_CLASS_MAPPINGS["LayerDiffuseApply"]().apply(model, "auto", weight, start, end)[0]
    if mode == "joint":
        return NODE_CLASS_MAPPINGS["LayerDiffuseJointApply"]().apply(
            model, weight, foreground_prompt=_prompt(11), blended_prompt=_prompt(12), start_percent=start,
            end_percent=end)[0]
    foreground = torch.rand(1, 8 * size, 8 * size, 4, generator=torch.Generator().manual_seed(2))
    return NODE_CLASS_MAPPINGS["LayerDiffuseCondJointApply"]().apply(
        model, foreground, "SD1.5 foreground to background + blended", weight, start_percent=start,
        end_percent=end)[0]


def conds(model):
    generator = torch.Generator().manual_seed(5)
    if isinstance(model.model.model_config, comfy.supported_models.SDXL):
        extra = {"pooled_output": torch.randn(1, 1280, generator=generator)}
        return ([[torch.randn(1, 77, 2048, generator=generator), extra]],
                [[torch.zeros(1, 77, 2048), {"pooled_output": torch.zeros(1, 1280)}]])
    return [[torch.randn(1, 77, 768, generator=generator), {}]], [[torch.zeros(1, 77, 768), {}]]


def sample(model, batch: int = 1, steps: int = 3, sampler: str = "euler", scheduler: str = "normal",
           seed: int = 1, size: int = 8) -> torch.Tensor:
    """A 3-step, cfg-5 sampling of a `size`x`size` latent; the global RNG is seeded for patches that use it."""
    latent = torch.zeros(batch, 4, size, size)
    noise = comfy.sample.prepare_noise(latent, seed)
    positive, negative = conds(model)
    torch.manual_seed(seed)
    return comfy.sample.sample(model, noise, steps, 5.0, sampler, scheduler, positive, negative, latent,
                               seed=seed, disable_pbar=True)
