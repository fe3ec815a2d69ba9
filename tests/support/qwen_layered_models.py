"""Qwen-Image-Layered fixtures with random values, built from the host's own classes: a reduced transformer the host
detects as Qwen-Image-Layered (the real widths: 24 heads of 128, Qwen2.5-VL's 3584-wide text input; one of its 60
blocks) and narrow Wan VAEs in the host's key layout, RGBA (the layered VAE) and RGB (Qwen-Image's own).

The host reads the transformer's block count and the layered variant (its extra timestep embedding) from the file,
and a Wan VAE's width and image channels from its shapes, so both load through the usual loaders.
"""

from __future__ import annotations

from pathlib import Path

import comfy.ops
import torch
from comfy.ldm.qwen_image.model import QwenImageTransformer2DModel
from comfy.ldm.wan.vae import WanVAE

from . import fixtures
from .host_models import randomize

TEXT_FEATURES = 3584  # Qwen2.5-VL-7B's hidden size: the width of the conditioning the model takes
REDUCED_LAYERED = "random_qwen_image_layered_1block.safetensors"


def _random(shapes: dict[str, torch.Size], seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {key: (torch.ones(shape) if "norm" in key and len(shape) == 1 else
                  torch.randn(shape, generator=generator) * 0.02).to(torch.bfloat16)
            for key, shape in shapes.items()}


def reduced_layered_file(cache: Path) -> Path:
    """The reduced Qwen-Image-Layered transformer in bf16 under the published file's key names (no prefix)."""
    def make() -> dict[str, torch.Tensor]:
        with torch.device("meta"):
            model = QwenImageTransformer2DModel(num_layers=1, use_additional_t_cond=True,
                                                operations=comfy.ops.disable_weight_init)
        return _random({key: value.shape for key, value in model.state_dict().items()}, seed=0)
    return fixtures.cached_file(cache, REDUCED_LAYERED, make)


def wan_vae_file(cache: Path, image_channels: int) -> Path:
    """A narrow Wan 2.1 VAE (width 16 where the published one has 96) with 4 image channels (Qwen-Image-Layered's)
    or 3 (Qwen-Image's), in fp32."""
    def make() -> dict[str, torch.Tensor]:
        model = WanVAE(dim=16, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                       temperal_downsample=[False, True, True], image_channels=image_channels,
                       conv_out_channels=image_channels, dropout=0.0)
        randomize(model, image_channels)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.endswith(".gamma"):  # RMS norm scales, shaped (C, 1, 1, 1): as trained ones are, near 1
                    param.fill_(1.0)
        return model.state_dict()
    return fixtures.cached_file(cache, f"random_wan21_vae_narrow_{image_channels}ch_unit_norms.safetensors", make)
