"""Host VAE files of each latent space the codec trainer supports, random values in the layouts the host detects.

Each is loaded as Load VAE loads a file (`comfy.sd.VAE(sd=...)`, under the inference mode nodes run in), so the
host itself decides what it is. The SD-family autoencoders keep their full width: the host reads their layout
from fixed settings, not from the file (84 M parameters, kept in bf16). The Wan 2.1 VAE, whose width the host
reads from the file, is narrowed. The `*_passthrough` kinds keep the SD, `ae` and FLUX.2 layouts with weights that give
back what was encoded (support/passthrough_vae.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import comfy.sd
import comfy.utils
import torch
from comfy.ldm.wan.vae import WanVAE

from . import fixtures
from .flux_models import AE_CONFIG, ae_state, flux_vae_file
from .host_models import randomize
from .passthrough_vae import passthrough_ae_state

WAN_DIM = 16  # Wan 2.1 and Qwen-Image ship 96


def _conv1x1(out_channels: int, in_channels: int, generator: torch.Generator, scale: float) -> torch.Tensor:
    return torch.randn(out_channels, in_channels, 1, 1, generator=generator) * scale


def sd_vae_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """The SD1.5/SDXL VAE (as `sdxl_vae.safetensors`): 4 channels, quant convs at the top level."""
    generator = torch.Generator().manual_seed(seed)
    state = ae_state(dict(AE_CONFIG, z_channels=4), seed=seed)
    state["quant_conv.weight"] = _conv1x1(8, 8, generator, 0.5)  # a posterior with some spread
    state["quant_conv.bias"] = torch.zeros(8)
    state["post_quant_conv.weight"] = _conv1x1(4, 4, generator, 0.5)
    state["post_quant_conv.bias"] = torch.zeros(4)
    return state


def flux2_vae_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """The FLUX.2 VAE (as BFL's file): 32 channels at 1/8 with quant convs inside encoder/decoder, and the
    batch-norm running statistics the host normalises its 128-channel 1/16 latent with."""
    generator = torch.Generator().manual_seed(seed)
    state = ae_state(dict(AE_CONFIG, z_channels=32), seed=seed)
    state["encoder.quant_conv.weight"] = _conv1x1(64, 64, generator, 0.3)
    state["encoder.quant_conv.bias"] = torch.zeros(64)
    state["decoder.post_quant_conv.weight"] = _conv1x1(32, 32, generator, 0.3)
    state["decoder.post_quant_conv.bias"] = torch.zeros(32)
    state["bn.running_mean"] = torch.randn(128, generator=generator) * 0.5
    state["bn.running_var"] = torch.rand(128, generator=generator) * 3.0 + 0.25  # each channel its own scale
    state["bn.num_batches_tracked"] = torch.tensor(1000)
    return state


def _passing_through(state: dict[str, torch.Tensor], z_channels: int, seed: int,
                     quant_convs: dict[str, int]) -> dict[str, torch.Tensor]:
    """`state` with its autoencoder passing its input through (support/passthrough_vae.py) and its quant convs
    (key: channels) identity."""
    state.update(passthrough_ae_state(z_channels, seed))
    for key, channels in quant_convs.items():
        state[key] = torch.eye(channels)[:, :, None, None]
    return state


def passthrough_flux2_vae_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """The FLUX.2 VAE's layout, passing its input through."""
    return _passing_through(flux2_vae_state(seed), 32, seed,
                            {"encoder.quant_conv.weight": 64, "decoder.post_quant_conv.weight": 32})


def passthrough_sd_vae_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """The SD1.5/SDXL VAE's layout, passing its input through."""
    return _passing_through(sd_vae_state(seed), 4, seed, {"quant_conv.weight": 8, "post_quant_conv.weight": 4})


def wan21_vae_state(seed: int = 0, dim: int = WAN_DIM) -> dict[str, torch.Tensor]:
    """The Wan 2.1 VAE of Qwen-Image and Wan 2.1 (16 channels at 1/8, one latent frame per image), `dim` wide."""
    model = WanVAE(dim=dim, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                   temperal_downsample=[False, True, True], dropout=0.0)
    randomize(model, seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("gamma"):  # RMS norm scales
                param.fill_(1.0)
            elif param.ndim > 1:  # fan-in scaled: activations neither vanish nor blow up through the layers
                param.copy_(param / 0.02 / (param[0].numel() ** 0.5))
    return model.state_dict()


def _cached(cache: Path, name: str, make: Callable[[], dict[str, torch.Tensor]]) -> Path:
    return fixtures.cached_file(cache, name, lambda: {k: v.to(torch.bfloat16) if v.is_floating_point() else v
                                                      for k, v in make().items()})


FILES: dict[str, Callable[[Path], Path]] = {  # kind -> the cached file
    "sd": lambda cache: _cached(cache, "random_sd_vae.safetensors", sd_vae_state),
    "sd_passthrough": lambda cache: _cached(cache, "passthrough_sd_vae.safetensors", passthrough_sd_vae_state),
    "ae": flux_vae_file,  # FLUX.1's ae.safetensors; the SD3 VAE has the same layout
    "flux2": lambda cache: _cached(cache, "random_flux2_vae.safetensors", flux2_vae_state),
    "ae_passthrough": lambda cache: _cached(cache, "passthrough_ae.safetensors", passthrough_ae_state),
    "flux2_passthrough": lambda cache: _cached(cache, "passthrough_flux2_vae.safetensors",
                                               passthrough_flux2_vae_state),
    "wan21": lambda cache: _cached(cache, f"random_wan21_vae_d{WAN_DIM}.safetensors", wan21_vae_state),
}


def load_vae(path: Path, inference: bool = True) -> comfy.sd.VAE:
    """The host's VAE from a file, as Load VAE gives it inside a running graph (weights are inference tensors;
    `inference` off: normal tensors, as a script outside a graph would have them)."""
    with torch.inference_mode(inference):
        state, metadata = comfy.utils.load_torch_file(str(path), return_metadata=True)
        return comfy.sd.VAE(sd=state, metadata=metadata)


def host_vae(cache: Path, kind: str, inference: bool = True) -> comfy.sd.VAE:
    return load_vae(FILES[kind](cache), inference)
