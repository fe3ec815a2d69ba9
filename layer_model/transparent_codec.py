"""RGBA decoding with test-time augmentation, and the transparency offset for encoding.

Pure torch. Images here are [B,C,H,W] float in [0,1]; latents are the host's unscaled
VAE latents [B,C,H/d,W/d] (4 channels at 1/8 for SD1.5/SDXL, 16 for FLUX, 128 at 1/16 for FLUX.2).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .alpha import composite_on_grey, fill_transparent_rgb
from .median import lower_median
from .transparent_vae import DecoderConfig, TransparencyEncoder, TransparentDecoder
from .weights import DIFFUSERS, FLUX, SD15, SDXL

LATENT_SCALE = 8  # pixels per latent cell of the SD1.5, SDXL and FLUX.1 VAEs (the published codecs')


@dataclass(frozen=True)
class CodecLayout:
    """How a base model's transparent decoder and offset encoder meet its latent."""

    latent_channels: int
    alpha_first: bool  # offset encoder input: (alpha, colour) for SD; the FLUX port feeds (colour, alpha)
    offset_scale: float  # the encoder's output times this is the offset, in posterior std units
    downscale: int = LATENT_SCALE  # image pixels per latent cell along a side
    decoder_channels: tuple[int, ...] = DecoderConfig.block_channels  # the published width; trainers may narrow it

    def decoder(self) -> TransparentDecoder:
        level = self.downscale.bit_length() - 1
        return TransparentDecoder(DecoderConfig(block_channels=self.decoder_channels,
                                                latent_channels=self.latent_channels, latent_level=level))

    def encoder(self) -> TransparencyEncoder:
        return TransparencyEncoder(self.latent_channels, self.downscale)


SD_CODEC = CodecLayout(latent_channels=4, alpha_first=True, offset_scale=1.0)
FLUX_CODEC = CodecLayout(latent_channels=16, alpha_first=False, offset_scale=300.0)  # the port's `alpha=300`
CODECS = {SD15: SD_CODEC, SDXL: SD_CODEC, FLUX: FLUX_CODEC}
# LayerDiffusion's diffusers set (SDXL): the same modules, its encoder's output times 300. Its VAE input,
# (rgb*2-1)*alpha in the VAE's [-1, 1], is the 50% grey composite `encoder_inputs` makes in [0, 1].
SD_DIFFUSERS_CODEC = CodecLayout(latent_channels=4, alpha_first=True, offset_scale=300.0)
CODEC_SETS = {(SDXL, DIFFUSERS): SD_DIFFUSERS_CODEC}  # (family, weight set) -> layout, past a family's first set

Variant = tuple[bool, int]  # (horizontal flip, quarter turns)

# Variants per augmentation count. Subsets keep the image's orientation where they can, so that
# all their passes share one shape and run as one batch.
AUGMENTATIONS: dict[int, tuple[Variant, ...]] = {
    1: ((False, 0),),
    2: ((False, 0), (True, 0)),
    4: ((False, 0), (True, 0), (False, 2), (True, 2)),
    8: tuple((flip, k) for flip in (False, True) for k in range(4)),
}

Progress = Callable[[int], None]  # called with the number of decoder passes just finished


def narrowed_channels(width: float) -> tuple[int, ...]:
    """The decoder's level widths at `width` times the published ones (multiples of 8: its attention heads
    are 8 channels wide), for codecs trained smaller than the published decoder's 104 M parameters."""
    if not 0.0 < width <= 1.0:
        raise ValueError(f"the decoder width is a fraction of the published one, in (0, 1], got {width}")
    return tuple(max(8, round(c * width / 8) * 8) for c in DecoderConfig.block_channels)


def apply_variant(x: torch.Tensor, variant: Variant) -> torch.Tensor:
    flip, turns = variant
    if flip:
        x = torch.flip(x, dims=(-1,))
    return torch.rot90(x, k=turns, dims=(-2, -1))


def invert_variant(x: torch.Tensor, variant: Variant) -> torch.Tensor:
    flip, turns = variant
    x = torch.rot90(x, k=-turns, dims=(-2, -1))
    if flip:
        x = torch.flip(x, dims=(-1,))
    return x


def check_latent_matches_image(rgb: torch.Tensor, latent: torch.Tensor, scale: int = LATENT_SCALE) -> None:
    """Raise a clear error unless the latent is the one the image was decoded from (size and batch)."""
    (b, _, h, w), (lb, _, lh, lw) = rgb.shape, latent.shape
    if (h, w) != (lh * scale, lw * scale):
        raise ValueError(
            f"The latent is {lw}x{lh} (an image of {lw * scale}x{lh * scale} px) but the image is "
            f"{w}x{h} px. Connect the IMAGE that VAE Decode produced from this same LATENT, without resizing it."
        )
    if b != lb:
        raise ValueError(
            f"The latent batch has {lb} samples but the image batch has {b}. Connect the IMAGE decoded from this "
            "same LATENT (both must hold the same samples in the same order)."
        )


def pad_to_multiple(rgb: torch.Tensor, latent: torch.Tensor, multiple: int,
                    scale: int = LATENT_SCALE) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad bottom/right by edge replication so the image sides are multiples of `multiple`."""
    h, w = rgb.shape[-2:]
    pad_h, pad_w = (math.ceil(s / multiple) * multiple - s for s in (h, w))
    if pad_h == 0 and pad_w == 0:
        return rgb, latent
    rgb = F.pad(rgb, (0, pad_w, 0, pad_h), mode="replicate")
    latent = F.pad(latent, (0, pad_w // scale, 0, pad_h // scale), mode="replicate")
    return rgb, latent


def _passes_by_shape(batch: int, variants: Sequence[Variant]) -> list[list[tuple[int, int]]]:
    """(sample, variant index) pairs grouped so that each group's passes have one spatial shape."""
    upright = [(b, v) for b in range(batch) for v, (_, k) in enumerate(variants) if k % 2 == 0]
    turned = [(b, v) for b in range(batch) for v, (_, k) in enumerate(variants) if k % 2 == 1]
    return [group for group in (upright, turned) if group]


def _memory_format_of(weight: torch.Tensor) -> torch.memory_format:
    """Activations are fed in the weights' layout (see `decode_precision` for which is chosen)."""
    if weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def _split_alpha_last(y: torch.Tensor) -> torch.Tensor:
    """Decoder output is (alpha, r, g, b); the pack's convention is (r, g, b, alpha)."""
    return torch.cat([y[:, 1:4], y[:, 0:1]], dim=1)


@torch.inference_mode()
def decode_rgba(
    decoder: TransparentDecoder,
    rgb: torch.Tensor,
    latent: torch.Tensor,
    augmentations: int = 8,
    sub_batch_size: int = 8,
    progress: Progress | None = None,
) -> torch.Tensor:
    """Straight RGBA [B,4,H,W] from the VAE-decoded RGB [B,3,H,W] and its latent [B,C,H/d,W/d].

    Each of `augmentations` flip/rotation variants is decoded, clipped to [0,1], transformed back,
    and the per-pixel median taken. Any size divisible by 8 works: the decoder sees the image padded
    to a multiple of 64, and the result is cropped back. At most `sub_batch_size` passes run at once.
    """
    if augmentations not in AUGMENTATIONS:
        raise ValueError(f"augmentations must be one of {sorted(AUGMENTATIONS)}, got {augmentations}")
    if sub_batch_size < 1:
        raise ValueError(f"sub_batch_size must be at least 1, got {sub_batch_size}")
    scale = decoder.config.downscale
    check_latent_matches_image(rgb, latent, scale)
    variants = AUGMENTATIONS[augmentations]
    param = next(decoder.parameters())
    layout = _memory_format_of(param)
    height, width = rgb.shape[-2:]
    rgb, latent = pad_to_multiple(rgb.float(), latent.float(), decoder.config.pad_multiple, scale)

    results = torch.empty((len(variants),) + tuple(rgb.shape[:1]) + (4,) + tuple(rgb.shape[2:]), device=rgb.device)
    for group in _passes_by_shape(rgb.shape[0], variants):
        for start in range(0, len(group), sub_batch_size):
            chunk = group[start:start + sub_batch_size]
            feed_rgb = torch.stack([apply_variant(rgb[b], variants[v]) for b, v in chunk])
            feed_latent = torch.stack([apply_variant(latent[b], variants[v]) for b, v in chunk])
            out = decoder(
                feed_rgb.to(param.device, param.dtype).contiguous(memory_format=layout),
                feed_latent.to(param.device, param.dtype),
            )
            out = out.float().clamp_(0.0, 1.0).to(rgb.device)
            for (b, v), y in zip(chunk, out, strict=True):
                results[v, b] = invert_variant(y, variants[v])
            if progress is not None:
                progress(len(chunk))
    return _split_alpha_last(lower_median(results.unbind(0))[..., :height, :width])


@torch.inference_mode()
def decode_rgba_reference(
    decoder: TransparentDecoder, rgb: torch.Tensor, latent: torch.Tensor, augmentations: int = 8
) -> torch.Tensor:
    """The plain definition of `decode_rgba`: one variant of one image per pass, no batching.

    Kept as the yardstick the fast path is tested and benchmarked against.
    """
    scale = decoder.config.downscale
    check_latent_matches_image(rgb, latent, scale)
    height, width = rgb.shape[-2:]
    rgb, latent = pad_to_multiple(rgb.float(), latent.float(), decoder.config.pad_multiple, scale)
    param = next(decoder.parameters())
    decoded = []
    for b in range(rgb.shape[0]):
        outs = []
        for variant in AUGMENTATIONS[augmentations]:
            feed_rgb, feed_latent = apply_variant(rgb[b:b + 1], variant), apply_variant(latent[b:b + 1], variant)
            y = decoder(feed_rgb.to(param), feed_latent.to(param))
            outs.append(invert_variant(y.float().clamp(0.0, 1.0), variant).cpu())
        decoded.append(torch.median(torch.stack(outs), dim=0).values)
    return _split_alpha_last(torch.cat(decoded)[..., :height, :width])


def encoder_inputs(rgb: torch.Tensor, alpha: torch.Tensor,
                   layout: CodecLayout = SD_CODEC) -> tuple[torch.Tensor, torch.Tensor]:
    """(RGB for the normal VAE, input for the transparency encoder) from straight RGB and alpha.

    The normal VAE sees the image composited on 50% grey, as the published encoders were used;
    the transparency encoder sees alpha and the colour-filled RGB (invisible pixels carry colour
    bled from the visible ones), in the order its layout was trained on.
    """
    filled = fill_transparent_rgb(rgb, alpha)
    stacked = [alpha, filled] if layout.alpha_first else [filled, alpha]
    return composite_on_grey(rgb, alpha), torch.cat(stacked, dim=1)


@torch.inference_mode()
def encode_offset(encoder: TransparencyEncoder, encoder_input: torch.Tensor, sub_batch_size: int = 8) -> torch.Tensor:
    """Latent transparency offset [B,C,H/d,W/d] as the encoder gives it; H and W must be multiples of d."""
    h, w = encoder_input.shape[-2:]
    if h % encoder.downscale or w % encoder.downscale:
        raise ValueError(f"image sides must be multiples of {encoder.downscale} px to encode, got {w}x{h}")
    param = next(encoder.parameters())
    chunks = [
        encoder(encoder_input[i:i + sub_batch_size].to(param.device, param.dtype)).float().to(encoder_input.device)
        for i in range(0, encoder_input.shape[0], sub_batch_size)
    ]
    return torch.cat(chunks)


def offset_latent(mean: torch.Tensor, std: torch.Tensor, offset: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """The transparent latent: the VAE posterior's mean moved by `scale * offset` posterior std units."""
    return mean + std * offset * scale
