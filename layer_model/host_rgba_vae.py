"""RGBA VAE files as the host's own VAE: `comfy.sd.VAE` around the host's KL autoencoder (its Encoder and Decoder)
with 4 image channels, so VAE Decode/Encode, memory estimates and device moves are the host's.

The host's loader reads FLUX-kind VAEs with 3 image channels fixed, so it cannot take these files as they are.
`comfy.sd.VAE` also accepts an explicit autoencoder configuration; it is built from that, and the few attributes
the host's file detection would have set for this architecture (latent channels and scale, FLUX.2's memory
factor) are set as the host sets them for the RGB VAE of the same family (the host tests compare the two).
"""

from __future__ import annotations

import comfy.diffusers_convert
import comfy.sd
import folder_paths
import torch
from comfy.ldm.models.autoencoder import AutoencoderKL

from . import host, weights
from .rgba_vae import (
    RGBA,
    RGBAVAEError,
    RGBAVAEKind,
    ddconfig,
    is_diffusers_layout,
    rgba_kind,
    top_level_quant_convs,
    with_identity_quant_convs,
)

OPTIONAL_KEYS = (".num_batches_tracked",)  # BatchNorm fills it in when a file leaves it out


def host_state(state: dict[str, torch.Tensor], kind: RGBAVAEKind) -> dict[str, torch.Tensor]:
    """The file's tensors under the host model's names: diffusers names converted by the host's own map, quant
    convolutions at the top level (identities for FLUX.1, which has none)."""
    if is_diffusers_layout(state):
        state = comfy.diffusers_convert.convert_vae_state_dict(state)
    return with_identity_quant_convs(top_level_quant_convs(state), kind.latent_channels)


def _check_strict(config: dict, embed_dim: int, state: dict[str, torch.Tensor], name: str, kind: RGBAVAEKind) -> None:
    """Refuse a file whose tensors do not fill the host model key for key and shape for shape, before building it
    (the host's own load is lenient and would only log what is missing)."""
    with torch.device("meta"):
        expected = AutoencoderKL(ddconfig=config, embed_dim=embed_dim).state_dict()
    problem = host.state_mismatch(expected, state, OPTIONAL_KEYS)
    if problem:
        raise RGBAVAEError(f"{name} looks like {kind.source}'s RGBA VAE ({kind.label}) but does not fit its layout "
                           f"({problem}). The file is damaged or another model's: download it again.")


def vae_from_state(state: dict[str, torch.Tensor], name: str = "The file") -> comfy.sd.VAE:
    """The host's VAE for an RGBA VAE state dict (diffusers' or the host's layout), its weights loaded strictly."""
    kind = rgba_kind(state, name)
    config = ddconfig(kind, state)
    converted = host_state(state, kind)
    _check_strict(config, kind.latent_channels, converted, name, kind)
    vae = comfy.sd.VAE(sd=converted, config={"params": {"ddconfig": config, "embed_dim": kind.latent_channels}})
    _as_host_detects(vae, kind)
    return vae


def _as_host_detects(vae: comfy.sd.VAE, kind: RGBAVAEKind) -> None:
    """What the host's file detection sets for the RGB VAE of this family, which a configured VAE skips."""
    vae.latent_channels = kind.host_latent_channels
    vae.downscale_ratio = vae.upscale_ratio = kind.downscale
    vae.output_channels = RGBA
    if kind.batch_norm:  # the host scales its KL estimate alike for FLUX.2's patchified latent
        per_pixel = vae.memory_used_decode
        vae.memory_used_decode = lambda shape, dtype: per_pixel(shape, dtype) * 4.0


def load_rgba_vae(path: str) -> comfy.sd.VAE:
    """An RGBA VAE file (.safetensors) as the host's VAE; a truncated file or one of another kind is refused with
    what it is and what to do."""
    return vae_from_state(weights.load_state_dict(path), path)


VAE_FOLDER = "vae"


def rgba_vae_choices() -> list[str]:
    """The published RGBA VAEs (downloaded when chosen and missing), then the files of the host's vae folders (an
    RGBA VAE saved there under another name; the loader refuses RGB ones)."""
    published = [f.name for f in weights.REGISTRY.values() if f.kind == weights.RGBA_VAE]
    local = [name for name in folder_paths.get_filename_list(VAE_FOLDER)
             if name.endswith(".safetensors") and name not in published]
    return published + local


def rgba_vae_path(name: str) -> str:
    return host.chosen_file(name, weights.REGISTRY, VAE_FOLDER, RGBAVAEError)


def image_channels(vae) -> int:
    return int(getattr(vae, "output_channels", 3))


def check_rgba_vae(vae) -> None:
    if image_channels(vae) != RGBA:
        raise RGBAVAEError(f"The connected VAE has {image_channels(vae)} image channels, so its decode has no alpha. "
                           "Connect an RGBA VAE: Layer Diffuse Load RGBA VAE's output (AlphaVAE, flux2-klein-alpha), "
                           "or the host's Qwen-Image-Layered VAE.")


def _check_latent(vae, latent: torch.Tensor) -> None:
    channels = int(getattr(vae, "latent_channels", latent.shape[1]))
    if latent.ndim < 4 or latent.shape[1] != channels:
        raise RGBAVAEError(f"The latent has shape {tuple(latent.shape)}, but this VAE decodes latents with {channels} "
                           "channels. Sample with the model this RGBA VAE belongs to (AlphaVAE: FLUX.1, 16 channels; "
                           "flux2-klein-alpha: FLUX.2, 128 channels).")


def decode_rgba(vae, latent: torch.Tensor) -> torch.Tensor:
    """RGBA [B, H, W, 4] in [0, 1], straight colour, decoded by the host's VAE.decode (its memory estimate and
    device moves); a video VAE's frames (Qwen-Image-Layered's layers) become batch entries, as VAE Decode does."""
    check_rgba_vae(vae)
    if latent.is_nested:
        latent = latent.unbind()[0]
    _check_latent(vae, latent)
    images = vae.decode(latent)
    return images.reshape(-1, *images.shape[-3:]) if images.ndim == 5 else images


def encode_rgba(vae, rgb: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """The latent of RGB [B, H, W, 3] and alpha [B, H, W, 1] (straight colour, [0, 1]) by the host's VAE.encode,
    which crops sides to its scale as it does for any image."""
    check_rgba_vae(vae)
    return vae.encode(torch.cat([rgb, alpha], dim=-1))
