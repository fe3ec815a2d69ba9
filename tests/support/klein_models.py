"""FLUX.2 Klein fixtures in the published layouts with random values (pure torch): a reduced FLUX.2 Klein Base 4B
transformer the host detects as FLUX.2, and LoRAs in flux2-klein-alpha's key format.

The reduced transformer keeps Klein 4B's real widths (hidden 3072, 24 heads of 128, Qwen3-4B's 7680-wide text
input, SiLU-gated MLPs of 3 x 3072, global modulation, no guidance input) with one double-stream and one
single-stream block, in BFL's key names (norm scales as `.scale`); the host reads the block counts from the file.
"""

from __future__ import annotations

from pathlib import Path

import torch

from . import fixtures

HIDDEN, MLP, HEAD_DIM, CONTEXT, LATENT_CHANNELS = 3072, 3 * 3072, 128, 7680, 128
KLEIN_4B_BLOCKS = (5, 20)  # the published model's double and single blocks
REDUCED_KLEIN = "random_flux2_klein_base_4b_d1s1.safetensors"
PREFIX = "diffusion_model."  # flux2-klein-alpha's LoRA key prefix, before the BFL module name


def lora_targets(double: int = 1, single: int = 1) -> dict[str, tuple[int, int]]:
    """BFL module -> (out, in) of the linears flux2-klein-alpha's LoRAs adapt: attention and MLP of both streams in
    each double block, linear1 and linear2 in each single block (80 on the published 5 + 20 blocks)."""
    h, gated = HIDDEN, 2 * MLP  # the SiLU gate doubles the first MLP layer's output
    targets = {}
    for i in range(double):
        for stream in ("img", "txt"):
            block = f"double_blocks.{i}.{stream}"
            targets |= {f"{block}_attn.qkv": (3 * h, h), f"{block}_attn.proj": (h, h),
                        f"{block}_mlp.0": (gated, h), f"{block}_mlp.2": (h, MLP)}
    for i in range(single):
        targets |= {f"single_blocks.{i}.linear1": (3 * h + gated, h), f"single_blocks.{i}.linear2": (h, h + MLP)}
    return targets


def klein_4b_shapes(double: int = 1, single: int = 1) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a FLUX.2 Klein Base 4B transformer file (no biases: FLUX.2 has none)."""
    h = HIDDEN
    shapes = {"img_in.weight": (h, LATENT_CHANNELS), "txt_in.weight": (h, CONTEXT),
              "time_in.in_layer.weight": (h, 256), "time_in.out_layer.weight": (h, h),
              "double_stream_modulation_img.lin.weight": (6 * h, h),
              "double_stream_modulation_txt.lin.weight": (6 * h, h),
              "single_stream_modulation.lin.weight": (3 * h, h),
              "final_layer.linear.weight": (LATENT_CHANNELS, h), "final_layer.adaLN_modulation.1.weight": (2 * h, h)}
    shapes |= {f"{module}.weight": shape for module, shape in lora_targets(double, single).items()}
    norms = [f"double_blocks.{i}.{s}_attn.norm" for i in range(double) for s in ("img", "txt")]
    norms += [f"single_blocks.{i}.norm" for i in range(single)]
    shapes |= {f"{norm}.{which}_norm.scale": (HEAD_DIM,) for norm in norms for which in ("query", "key")}
    return shapes


def reduced_klein_file(cache: Path) -> Path:
    """The reduced Klein Base 4B in bf16 (563 M parameters, 1.1 GB; made once)."""
    path = cache / REDUCED_KLEIN
    if not path.exists():
        generator = torch.Generator().manual_seed(0)
        state = {key: (torch.ones(shape) if key.endswith(".scale") else torch.randn(shape, generator=generator) * 0.02)
                 for key, shape in klein_4b_shapes().items()}
        fixtures._save({k: v.to(torch.bfloat16) for k, v in state.items()}, path)
    return path


def klein_lora(targets: dict[str, tuple[int, int]], rank: int = 32, seed: int = 0, scale: float = 0.02,
               dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """A LoRA in flux2-klein-alpha's format: `diffusion_model.<module>.lora_A.weight` [rank, in] and `.lora_B.weight`
    [out, rank], no alpha tensors."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for module, (out_features, in_features) in targets.items():
        for name, shape in (("lora_A", (rank, in_features)), ("lora_B", (out_features, rank))):
            state[f"{PREFIX}{module}.{name}.weight"] = (torch.randn(shape, generator=generator) * scale).to(dtype)
    return state
