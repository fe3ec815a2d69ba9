"""The PatchGAN discriminator of the codec trainer: scores overlapping patches of an RGBA image as real or not.

Isola et al.'s 70x70 PatchGAN (three stride-2 4x4 convolutions, then two stride-1), with group
normalisation in place of batch normalisation so that a sample's score depends on that sample alone: the
same under any split of the batch between processes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PatchDiscriminator(nn.Module):
    """[B,4,H,W] (premultiplied RGB and alpha) -> patch scores [B,1,H/8-2,W/8-2]."""

    def __init__(self, in_channels: int = 4, width: int = 64, groups: int = 16) -> None:
        super().__init__()
        widths = (width, width * 2, width * 4, width * 8)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        for i, (cin, cout) in enumerate(zip(widths, widths[1:], strict=False)):
            stride = 2 if i < 2 else 1
            layers += [nn.Conv2d(cin, cout, 4, stride=stride, padding=1, bias=False), nn.GroupNorm(groups, cout),
                       nn.LeakyReLU(0.2)]
        layers.append(nn.Conv2d(widths[-1], 1, 4, stride=1, padding=1))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x * 2.0 - 1.0)


def hinge_losses(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """The discriminator's hinge loss per sample: real patches pushed above 1, decoded ones below -1."""
    real = F.relu(1.0 - real_scores).mean(dim=(1, 2, 3))
    fake = F.relu(1.0 + fake_scores).mean(dim=(1, 2, 3))
    return 0.5 * (real + fake)
