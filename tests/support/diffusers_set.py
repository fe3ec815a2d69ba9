"""LayerDiffusion's SDXL diffusers set as the tests rebuild it: offsets under diffusers UNet names, random values.

The key names are written out here from the SDXL layout, not read from the host's map, so that the tests check
the pack's use of that map. Which projections the published `ld_diffusers_sdxl_attn.safetensors` covers is not
stated in its CLI's code (it adds every key the file has); the fixture assumes the projections of the v1 attn
LoRA it was released beside (attn1 q/k/v/out, attn2 q/out).
"""

from __future__ import annotations

from pathlib import Path

import torch

from . import fixtures
from .published_keys import LORA_TARGETS

RES_BLOCKS = 2  # SDXL's resnets per level, so input block n = 1 + 3 * level + i, output block 3 * level + i


def attention_blocks(depths: tuple[int, int], middle: int) -> dict[str, tuple[str, int, int]]:
    """diffusers transformer-block path -> (LDM path, width level, depth index) of an SDXL UNet whose levels
    1 and 2 have transformer depths `depths` (SDXL: 2, 10) and its middle block `middle` (10); level 0 has none."""
    blocks = {}
    for level, depth in zip((1, 2), depths, strict=True):
        for i in range(RES_BLOCKS):
            for t in range(depth):
                blocks[f"down_blocks.{level}.attentions.{i}.transformer_blocks.{t}"] = (
                    f"input_blocks.{1 + 3 * level + i}.1.transformer_blocks.{t}", level, t)
    for t in range(middle):
        blocks[f"mid_block.attentions.0.transformer_blocks.{t}"] = (f"middle_block.1.transformer_blocks.{t}", 2, t)
    for up, (level, depth) in enumerate(((2, depths[1]), (1, depths[0]))):  # up block 0 is the deepest level
        for i in range(RES_BLOCKS + 1):
            for t in range(depth):
                blocks[f"up_blocks.{up}.attentions.{i}.transformer_blocks.{t}"] = (
                    f"output_blocks.{3 * up + i}.1.transformer_blocks.{t}", level, t)
    return blocks


def offset_names(depths: tuple[int, int], middle: int, model_channels: int) -> dict[str, tuple[str, tuple[int, int]]]:
    """diffusers weight name -> (model key, shape) of every offset the attn file holds for that layout."""
    names = {}
    for path, (ldm, level, _) in attention_blocks(depths, middle).items():
        width = model_channels * (2 ** level)  # channel_mult (1, 2, 4)
        for suffix in LORA_TARGETS:
            names[path + suffix] = (f"diffusion_model.{ldm}{suffix}", (width, width))
    return names


FULL_SDXL = ((2, 10), 10, 320)  # the published model's layout: 420 offsets
NARROW_SDXL = ((1, 1), 1, 64)  # host_models.NARROW_SDXL_UNET


def random_offsets(layout=NARROW_SDXL, seed: int = 0, scale: float = 0.01) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {name: (torch.randn(shape, generator=generator) * scale).half()
            for name, (_, shape) in offset_names(*layout).items()}


LAYOUT_NAMES = {NARROW_SDXL: "narrow", FULL_SDXL: "full"}


def attn_file(cache: Path, seed: int = 0, layout=NARROW_SDXL) -> Path:
    """`ld_diffusers_sdxl_attn.safetensors` for the narrow SDXL UNet (or the full one: 590 M offsets, 1.2 GB), in fp16
    (cached)."""
    return fixtures.cached_file(cache, f"random_ld_diffusers_sdxl_attn_{LAYOUT_NAMES[layout]}_s{seed}.safetensors",
                                lambda: random_offsets(layout, seed))
