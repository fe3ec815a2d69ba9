"""The LayerDiffusion transparent VAE decoder and latent-transparency encoder, in plain torch.

Parameter names and shapes follow the published files (`vae_transparent_decoder.safetensors`,
`layer_sd15_vae_transparent_decoder.safetensors`, the matching encoders, and the `decoder.*` /
`encoder.*` parts of the FLUX port's `TransparentVAE.pth`) so they load with `strict=True`. The
decoder is a convolutional UNet without time embedding: it reads the RGB image the normal VAE
decoded plus the unscaled latent and predicts alpha and straight RGB.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class DecoderConfig:
    """Architecture of the decoder; the default is the published one."""

    block_channels: tuple[int, ...] = (32, 32, 64, 128, 256, 512, 512)
    attention_blocks: int = 3  # the last N levels carry self-attention
    layers_per_block: int = 2
    groups: int = 4
    head_dim: int = 8
    latent_channels: int = 4
    latent_level: int = 3  # the latent joins the hidden state before this down level (H/2**level: H/8)
    eps: float = 1e-5

    @property
    def pad_multiple(self) -> int:
        """Image sides must be multiples of this (one halving per down level but the last)."""
        return 2 ** (len(self.block_channels) - 1)

    @property
    def downscale(self) -> int:
        """Image pixels per latent cell along a side."""
        return 2**self.latent_level


class ResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int, groups: int, eps: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=eps)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, cout, eps=eps)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        skip = x if self.conv_shortcut is None else self.conv_shortcut(x)
        return skip + h


class SelfAttention(nn.Module):
    """Spatial self-attention over all pixels with a residual connection."""

    def __init__(self, channels: int, groups: int, head_dim: int, eps: float) -> None:
        super().__init__()
        self.heads = channels // head_dim
        self.group_norm = nn.GroupNorm(groups, channels, eps=eps)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.ModuleList([nn.Linear(channels, channels)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.group_norm(x).flatten(2).transpose(1, 2)  # [B, HW, C]

        def split_heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, h * w, self.heads, c // self.heads).transpose(1, 2)

        q, k, v = (split_heads(proj(tokens)) for proj in (self.to_q, self.to_k, self.to_v))
        out = F.scaled_dot_product_attention(q, k, v)
        out = self.to_out[0](out.transpose(1, 2).reshape(b, h * w, c))
        return x + out.transpose(1, 2).reshape(b, c, h, w)


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class DownLevel(nn.Module):
    """Resnets (each optionally followed by attention), then an optional downsampler.

    Returns the output and every intermediate state, which the up path uses as skips.
    """

    def __init__(self, cin: int, cout: int, cfg: DecoderConfig, attention: bool, downsample: bool) -> None:
        super().__init__()
        n = cfg.layers_per_block
        self.resnets = nn.ModuleList(
            ResnetBlock(cin if i == 0 else cout, cout, cfg.groups, cfg.eps) for i in range(n)
        )
        if attention:
            self.attentions = nn.ModuleList(
                SelfAttention(cout, cfg.groups, cfg.head_dim, cfg.eps) for _ in range(n)
            )
        self.has_attention = attention
        if downsample:
            self.downsamplers = nn.ModuleList([Downsample(cout)])
        self.has_downsample = downsample

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = []
        for i, resnet in enumerate(self.resnets):
            x = resnet(x)
            if self.has_attention:
                x = self.attentions[i](x)
            skips.append(x)
        if self.has_downsample:
            x = self.downsamplers[0](x)
            skips.append(x)
        return x, skips


class UpLevel(nn.Module):
    """Resnets fed with concatenated skips (each optionally followed by attention), then upsampling."""

    def __init__(
        self, cin: int, cout: int, skip_channels: list[int], cfg: DecoderConfig, attention: bool, upsample: bool
    ) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock((cin if i == 0 else cout) + skip, cout, cfg.groups, cfg.eps)
            for i, skip in enumerate(skip_channels)
        )
        if attention:
            self.attentions = nn.ModuleList(
                SelfAttention(cout, cfg.groups, cfg.head_dim, cfg.eps) for _ in skip_channels
            )
        self.has_attention = attention
        if upsample:
            self.upsamplers = nn.ModuleList([Upsample(cout)])
        self.has_upsample = upsample

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        for i, resnet in enumerate(self.resnets):
            x = resnet(torch.cat([x, skips.pop()], dim=1))
            if self.has_attention:
                x = self.attentions[i](x)
        if self.has_upsample:
            x = self.upsamplers[0](x)
        return x


class MidBlock(nn.Module):
    def __init__(self, channels: int, cfg: DecoderConfig) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(ResnetBlock(channels, channels, cfg.groups, cfg.eps) for _ in range(2))
        self.attentions = nn.ModuleList([SelfAttention(channels, cfg.groups, cfg.head_dim, cfg.eps)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resnets[1](self.attentions[0](self.resnets[0](x)))


class TransparentDecoder(nn.Module):
    """(RGB in [0,1] [B,3,H,W], unscaled latent [B,C,H/d,W/d]) -> [B,4,H,W]: alpha, then straight RGB.

    C is `config.latent_channels`: 4 for SD1.5/SDXL, 16 for the FLUX port's decoder; d is 2**latent_level
    (8 for the published decoders).

    H and W must be multiples of `config.pad_multiple` (64); `decode_rgba` pads for you.
    """

    def __init__(self, config: DecoderConfig | None = None) -> None:
        super().__init__()
        cfg = config or DecoderConfig()
        self.config = cfg
        chans = cfg.block_channels
        levels = len(chans)
        first_attention = levels - cfg.attention_blocks

        self.conv_in = nn.Conv2d(3, chans[0], 3, padding=1)
        self.latent_conv_in = nn.Conv2d(cfg.latent_channels, chans[cfg.latent_level - 1], 1)

        self.down_blocks = nn.ModuleList()
        skip_channels = [chans[0]]
        for i, cout in enumerate(chans):
            cin = chans[max(i - 1, 0)]
            last = i == levels - 1
            self.down_blocks.append(DownLevel(cin, cout, cfg, i >= first_attention, not last))
            skip_channels += [cout] * (cfg.layers_per_block + (0 if last else 1))

        self.mid_block = MidBlock(chans[-1], cfg)

        self.up_blocks = nn.ModuleList()
        reversed_chans = chans[::-1]
        prev = chans[-1]
        for i, cout in enumerate(reversed_chans):
            level_skips = [skip_channels.pop() for _ in range(cfg.layers_per_block + 1)]
            attention = i < cfg.attention_blocks
            self.up_blocks.append(UpLevel(prev, cout, level_skips, cfg, attention, i < levels - 1))
            prev = cout

        self.conv_norm_out = nn.GroupNorm(cfg.groups, chans[0], eps=cfg.eps)
        self.conv_out = nn.Conv2d(chans[0], 4, 3, padding=1)

    def forward(self, rgb: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(rgb)
        skips = [x]
        for i, level in enumerate(self.down_blocks):
            if i == self.config.latent_level:
                x = x + self.latent_conv_in(latent)
            x, level_skips = level(x)
            skips += level_skips
        x = self.mid_block(x)
        for level in self.up_blocks:
            x = level(x, skips)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


class TransparencyEncoder(nn.Module):
    """(alpha and colour-filled RGB in [0,1], [B,4,H,W]) -> latent offset [B,C,H/d,W/d].

    C is the latent's channel count: 4 for SD1.5/SDXL, 16 for FLUX (whose port feeds colour first); d its
    downscale, 8 for the published encoders. A latent at 1/16 (FLUX.2) gets one more stride-2 stage before
    the last convolution; at 1/8 the layout is the published one, key for key.
    """

    CHANNELS = ((4, 32, 1), (32, 32, 1), (32, 64, 2), (64, 64, 1), (64, 128, 2),
                (128, 128, 1), (128, 256, 2), (256, 256, 1), (256, 4, 1))  # (in, out, stride) for SD

    def __init__(self, latent_channels: int = 4, downscale: int = 8) -> None:
        super().__init__()
        extra = {8: (), 16: ((256, 256, 2), (256, 256, 1))}.get(downscale)
        if extra is None:
            raise ValueError(f"the transparency encoder reaches latents at 1/8 or 1/16 of the image, not 1/{downscale}")
        layers: list[nn.Module] = []
        channels = self.CHANNELS[:-1] + extra + ((256, latent_channels, 1),)
        for i, (cin, cout, stride) in enumerate(channels):
            if i:
                layers.append(nn.SiLU())
            layers.append(nn.Conv2d(cin, cout, 3, stride=stride, padding=1))
        self.blocks = nn.Sequential(*layers)
        self.downscale = downscale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)
