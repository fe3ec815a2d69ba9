"""RGBA VAEs (AlphaVAE for FLUX.1, flux2-klein-alpha's for FLUX.2): which one a state dict holds, and the settings
the host's own KL autoencoder is built with for it (plain torch; the building is `host_rgba_vae.py`).

Both are the host's FLUX VAE architecture with 4 image channels in and out (conv_in and conv_out widened for
alpha). The key names of the image-side convolutions are the same in diffusers' layout and the host's, so the
kind can be read from either before any conversion.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

CONV_IN, CONV_OUT = "encoder.conv_in.weight", "decoder.conv_out.weight"
LATENT_IN = "decoder.conv_in.weight"  # [width, latent channels, 3, 3] in both layouts
BATCH_NORM = "bn.running_mean"  # FLUX.2's latent normalisation (same name in both layouts)
DIFFUSERS_MARK = "decoder.up_blocks.0.resnets.0.norm1.weight"  # the key the host recognises diffusers VAEs by
RGBA = 4
CH_MULT = [1, 2, 4, 4]  # both publish FLUX's four levels


@dataclass(frozen=True)
class RGBAVAEKind:
    label: str  # for users
    latent_channels: int  # at 1/8, before FLUX.2's 2x2 patchify
    batch_norm: bool  # FLUX.2: the host patchifies to 4x the channels at 1/16 and normalises with bn statistics
    source: str  # which published VAE has this layout

    @property
    def host_latent_channels(self) -> int:
        return self.latent_channels * 4 if self.batch_norm else self.latent_channels

    @property
    def downscale(self) -> int:
        return 16 if self.batch_norm else 8


FLUX1_RGBA = RGBAVAEKind("FLUX.1", 16, False, "AlphaVAE")
FLUX2_RGBA = RGBAVAEKind("FLUX.2", 32, True, "flux2-klein-alpha")
KINDS = (FLUX1_RGBA, FLUX2_RGBA)


class RGBAVAEError(ValueError):
    """A file that is not an RGBA VAE this pack can load, with what it is instead and what to do."""


def _channels(state: dict[str, torch.Tensor], name: str) -> tuple[int, int]:
    """(image channels in, image channels out) of a VAE state dict."""
    missing = [key for key in (CONV_IN, CONV_OUT, LATENT_IN) if key not in state]
    if missing:
        raise RGBAVAEError(f"{name} is not a VAE of the FLUX/SD kind: it has no {', '.join(missing)}. Choose an RGBA "
                           "VAE file (AlphaVAE's or flux2-klein-alpha's diffusion_pytorch_model.safetensors).")
    conv_in, conv_out = state[CONV_IN], state[CONV_OUT]
    if conv_in.ndim != 4 or conv_out.ndim != 4:
        raise RGBAVAEError(f"{name}: {CONV_IN} / {CONV_OUT} are not 2-D convolutions (shapes {tuple(conv_in.shape)}, "
                           f"{tuple(conv_out.shape)}); this is not an image VAE this loader knows.")
    return int(conv_in.shape[1]), int(conv_out.shape[0])


def rgba_kind(state: dict[str, torch.Tensor], name: str = "The file") -> RGBAVAEKind:
    """Which RGBA VAE `state` holds (diffusers' or the host's key layout), read from its shapes.

    RGBAVAEError for an RGB VAE, a VAE with another channel count, or another latent size.
    """
    channels_in, channels_out = _channels(state, name)
    if (channels_in, channels_out) != (RGBA, RGBA):
        hint = (" It is an ordinary RGB VAE: load it with the host's Load VAE node."
                if (channels_in, channels_out) == (3, 3) else "")
        raise RGBAVAEError(f"{name} is a VAE with {channels_in} image channels in and {channels_out} out; an RGBA "
                           f"VAE has 4 and 4 (conv_in and conv_out widened for alpha).{hint}")
    latent = int(state[LATENT_IN].shape[1])
    batch_norm = BATCH_NORM in state
    for kind in KINDS:
        if (kind.latent_channels, kind.batch_norm) == (latent, batch_norm):
            return kind
    known = "; ".join(f"{k.source} ({k.label}): {k.latent_channels} latent channels"
                      f"{' with batch-norm statistics' if k.batch_norm else ''}" for k in KINDS)
    raise RGBAVAEError(f"{name} is an RGBA VAE with {latent} latent channels"
                       f"{' and batch-norm statistics' if batch_norm else ''}, which no supported model samples. "
                       f"Supported: {known}.")


def is_diffusers_layout(state: dict[str, torch.Tensor]) -> bool:
    return DIFFUSERS_MARK in state


def ddconfig(kind: RGBAVAEKind, state: dict[str, torch.Tensor]) -> dict:
    """The host Encoder/Decoder settings for this VAE: FLUX's autoencoder with 4 image channels. The width is read
    from conv_in (128 in both published files)."""
    config = {"double_z": True, "z_channels": kind.latent_channels, "resolution": 256, "in_channels": RGBA,
              "out_ch": RGBA, "ch": int(state[CONV_IN].shape[0]), "ch_mult": list(CH_MULT), "num_res_blocks": 2,
              "attn_resolutions": [], "dropout": 0.0}
    if kind.batch_norm:
        config["batch_norm_latent"] = True
    return config


# BFL's FLUX.2 file keeps its quant convolutions inside encoder/decoder; the host's model has them at the top.
QUANT_RENAMES = {"encoder.quant_conv.": "quant_conv.", "decoder.post_quant_conv.": "post_quant_conv."}


def top_level_quant_convs(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` with quant convolutions under the host model's names (as the host renames FLUX.2's)."""
    renamed = {}
    for key, value in state.items():
        for old, new in QUANT_RENAMES.items():
            if key.startswith(old):
                key = new + key[len(old):]
        renamed[key] = value
    return renamed


def with_identity_quant_convs(state: dict[str, torch.Tensor], latent_channels: int) -> dict[str, torch.Tensor]:
    """FLUX.1's VAE has no quant convolutions, but the host's configurable autoencoder always has them: 1x1
    identities (ones on the diagonal, zero bias) compute exactly what their absence does, in any number format."""
    if "quant_conv.weight" in state:
        return state
    dtype = state[CONV_IN].dtype
    moments = 2 * latent_channels

    def identity(channels: int) -> torch.Tensor:
        return torch.eye(channels, dtype=dtype).reshape(channels, channels, 1, 1)

    return {**state, "quant_conv.weight": identity(moments), "quant_conv.bias": torch.zeros(moments, dtype=dtype),
            "post_quant_conv.weight": identity(latent_channels),
            "post_quant_conv.bias": torch.zeros(latent_channels, dtype=dtype)}
