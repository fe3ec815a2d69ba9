"""RGBA VAE files with random values in the published layouts: AlphaVAE (FLUX.1's `ae` with 4 image channels) and
flux2-klein-alpha's (FLUX.2's VAE with 4 image channels), each in the host's key layout (BFL's, as `ae.safetensors`
and `flux2-vae.safetensors`) and in diffusers' (`diffusion_pytorch_model.safetensors`, as both projects publish).

Full width (84 M parameters, bf16, cached). The diffusers layout is made by renaming the host layout's keys the
other way; the host tests check that the host's own converter maps them back exactly.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from . import fixtures
from .flux_models import AE_CONFIG, ae_state
from .host_vaes import flux2_vae_state

RGBA_CONFIG = dict(AE_CONFIG, in_channels=4, out_ch=4)
ALPHA_OUT_BIAS = 1.0  # as both projects start: alpha opaque before fine-tuning


def _widen(state: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """conv_in and conv_out of an RGB VAE widened to RGBA, the alpha weights random (fine-tuned files have them)."""
    generator = torch.Generator().manual_seed(seed + 1)
    conv_in, conv_out = state["encoder.conv_in.weight"], state["decoder.conv_out.weight"]
    alpha_in = torch.randn(conv_in.shape[0], 1, *conv_in.shape[2:], generator=generator) * conv_in.float().std()
    alpha_out = torch.randn(1, *conv_out.shape[1:], generator=generator) * conv_out.float().std()
    bias = state["decoder.conv_out.bias"]
    return {**state, "encoder.conv_in.weight": torch.cat([conv_in, alpha_in.to(conv_in)], 1),
            "decoder.conv_out.weight": torch.cat([conv_out, alpha_out.to(conv_out)], 0),
            "decoder.conv_out.bias": torch.cat([bias, torch.full((1,), ALPHA_OUT_BIAS, dtype=bias.dtype)])}


def alphavae_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """AlphaVAE in the host's layout: FLUX.1's `ae` (16 latent channels, no quant conv), RGBA."""
    return _widen(ae_state(AE_CONFIG, seed=seed), seed)


def flux2_alpha_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """flux2-klein-alpha's VAE in BFL's layout: FLUX.2's VAE (quant convs inside encoder/decoder, bn), RGBA."""
    return _widen(flux2_vae_state(seed), seed)


# Host name -> diffusers name, the inverse of comfy.diffusers_convert's VAE map.
_BLOCKS = (
    (r"^encoder\.down\.(\d+)\.block\.(\d+)\.", lambda m: f"encoder.down_blocks.{m[1]}.resnets.{m[2]}."),
    (r"^encoder\.down\.(\d+)\.downsample\.", lambda m: f"encoder.down_blocks.{m[1]}.downsamplers.0."),
    (r"^decoder\.up\.(\d+)\.block\.(\d+)\.", lambda m: f"decoder.up_blocks.{3 - int(m[1])}.resnets.{m[2]}."),
    (r"^decoder\.up\.(\d+)\.upsample\.", lambda m: f"decoder.up_blocks.{3 - int(m[1])}.upsamplers.0."),
    (r"\.mid\.block_(\d)\.", lambda m: f".mid_block.resnets.{int(m[1]) - 1}."),
)
_ATTENTION = {"norm.": "group_norm.", "q.": "to_q.", "k.": "to_k.", "v.": "to_v.", "proj_out.": "to_out.0."}
_TOP = {"encoder.quant_conv.": "quant_conv.", "decoder.post_quant_conv.": "post_quant_conv."}


def _diffusers_name(key: str) -> str:
    for old, new in _TOP.items():
        key = new + key[len(old):] if key.startswith(old) else key
    for pattern, name in _BLOCKS:
        key = re.sub(pattern, name, key)
    key = key.replace("nin_shortcut", "conv_shortcut").replace("norm_out", "conv_norm_out")
    attention = re.match(r"^(encoder|decoder)\.mid\.attn_1\.(.*)$", key)
    if attention:
        part = attention[2]
        for old, new in _ATTENTION.items():
            if part.startswith(old):
                part = new + part[len(old):]
                break
        key = f"{attention[1]}.mid_block.attentions.0.{part}"
    return key


def diffusers_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same tensors as diffusers saves an AutoencoderKL(Flux2): its names, attention projections as linears."""
    out = {}
    for key, value in state.items():
        name = _diffusers_name(key)
        is_projection = ".attentions.0.to_" in name and name.endswith(".weight")
        out[name] = value.reshape(value.shape[:2]) if is_projection else value
    return out


MAKERS = {"alphavae": alphavae_state, "flux2": flux2_alpha_state}


def rgba_vae_file(cache: Path, kind: str, layout: str = "host") -> Path:
    """The cached random file of `kind` ('alphavae', 'flux2') in `layout` ('host', 'diffusers')."""
    def make() -> dict[str, torch.Tensor]:
        state = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in MAKERS[kind]().items()}
        return diffusers_layout(state) if layout == "diffusers" else state
    return fixtures.cached_file(cache, f"random_rgba_vae_{kind}_{layout}.safetensors", make)


def rgb_counterpart(state: dict[str, torch.Tensor], alpha_first: bool = False) -> dict[str, torch.Tensor]:
    """An RGB VAE with the same weights in the host's layout (conv_in's alpha input dropped; conv_out's RGB, or with
    `alpha_first` the alpha output in the place of red), which the host loads with its own detection."""
    rows = [3, 1, 2] if alpha_first else [0, 1, 2]
    return {**state, "encoder.conv_in.weight": state["encoder.conv_in.weight"][:, :3],
            "decoder.conv_out.weight": state["decoder.conv_out.weight"][rows],
            "decoder.conv_out.bias": state["decoder.conv_out.bias"][rows]}
