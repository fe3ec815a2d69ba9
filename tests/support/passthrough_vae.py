"""A KL autoencoder in the host's own layout whose decoder gives back (a blurred copy of) what its encoder saw.

A VAE with random weights decodes every latent to much the same picture, so the codec trainer's identity
loss, its offset budget and harmlessness say nothing on it, and the transparent decoder's RGB input carries no
trace of the image. This one behaves as a trained VAE does where the codec trainer looks: each 8x8 block's
mean colour goes into the latent (as a fixed mix into all its channels), and the decoder interpolates it back
bilinearly, so decode(encode(x)) follows x to within the blur, and the decode moves with the latent.

How, in the host's layers (comfy/ldm/modules/diffusionmodules/model.py), the rest keeping random values:
- every residual and attention branch is closed (its last convolution zero): each block passes its input on;
- the encoder's downsamplers average 2x2, the decoder's upsamplers (nearest, then a 3x3 convolution) smooth
  with [1, 2, 1] / 4 per axis, which after nearest upsampling is bilinear interpolation;
- colour travels as +c and -c in channels of one GroupNorm group, with two channels of a constant K that the
  last residual block's bias adds. The group's mean is then fixed and its spread nearly so (K dominates), so
  `norm_out` is a fixed affine map, and its shift by 10 keeps SiLU in its linear part; `conv_out` undoes both.
"""

from __future__ import annotations

import torch
from comfy.ldm.modules.diffusionmodules.model import AttnBlock, Decoder, Downsample, Encoder, ResnetBlock, Upsample

from .flux_models import AE_CONFIG
from .host_models import randomize

CONSTANT = 32.0  # K: the group statistics' anchor
SHIFT = 10.0  # SiLU(y) = y to 5e-4 for y near 10
STD = 0.02  # the posterior's standard deviation, in the encoder's raw latent units
COLOUR_CHANNELS = ((0, 1), (4, 5), (8, 9))  # (+c, -c) per colour: groups 0, 1, 2 of the decoder's norm_out
CONSTANT_CHANNELS = (2, 3, 6, 7, 10, 11)


def colour_mix(z_channels: int, seed: int = 0) -> torch.Tensor:
    """[z, 3]: each latent channel a mix of the three colours (multiples of 1/4, exact in bf16), full rank."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        mix = torch.randint(-8, 9, (z_channels, 3), generator=generator).double() / 4
        if torch.linalg.matrix_rank(mix) == 3:
            return mix


def _close_branches(module: torch.nn.Module) -> None:
    for block in module.modules():
        if isinstance(block, ResnetBlock):
            block.conv2.weight.zero_()
            block.conv2.bias.zero_()
            if hasattr(block, "nin_shortcut"):  # channel count changes: keep the first channels
                _identity(block.nin_shortcut.weight)
                block.nin_shortcut.bias.zero_()
        elif isinstance(block, AttnBlock):
            block.proj_out.weight.zero_()
            block.proj_out.bias.zero_()
        elif isinstance(block, Downsample):  # pads right and bottom, then 3x3 stride 2: taps 0 and 1 average
            block.conv.weight.zero_()
            for channel in range(min(block.conv.weight.shape[:2])):
                block.conv.weight[channel, channel, :2, :2] = 0.25
            block.conv.bias.zero_()
        elif isinstance(block, Upsample):
            smooth = torch.tensor([1.0, 2.0, 1.0]) / 4
            block.conv.weight.zero_()
            for channel in range(min(block.conv.weight.shape[:2])):
                block.conv.weight[channel, channel] = torch.outer(smooth, smooth)
            block.conv.bias.zero_()


def _identity(weight: torch.Tensor) -> None:
    weight.zero_()
    for channel in range(min(weight.shape[:2])):
        weight[channel, channel] = 1.0


def _add_constants(last_block: ResnetBlock) -> None:
    for channel in CONSTANT_CHANNELS:
        last_block.conv2.bias[channel] = CONSTANT


def _linear_norm_out(norm: torch.nn.GroupNorm) -> None:
    """GroupNorm over a group (+c, -c, K, K, ...) is a fixed affine map; undo it and shift by SHIFT."""
    group = norm.num_channels // norm.num_groups
    constants = sum(1 for channel in CONSTANT_CHANNELS if channel < group)  # per colour's group
    mean = constants * CONSTANT / group
    spread = (constants * CONSTANT ** 2 / group - mean ** 2) ** 0.5
    norm.weight.zero_()
    norm.bias.zero_()
    for plus, minus in COLOUR_CHANNELS:
        for channel in (plus, minus):
            norm.weight[channel] = spread
            norm.bias[channel] = mean + SHIFT


def _read_colour(conv: torch.nn.Conv2d, mix: torch.Tensor) -> None:
    """conv_out: `mix` [out, 3] of the +colour channels, less the shift (the encoder's latent mean, then its
    log-variance if doubled; the decoder's RGB)."""
    conv.weight.zero_()
    z_channels = mix.shape[0]
    for colour, (plus, _) in enumerate(COLOUR_CHANNELS):
        conv.weight[:z_channels, plus, 1, 1] = mix[:, colour].float()
    conv.bias.zero_()
    conv.bias[:z_channels] = -SHIFT * mix.sum(dim=1).float()
    if conv.weight.shape[0] == 2 * z_channels:
        conv.bias[z_channels:] = 2 * torch.log(torch.tensor(STD))


def _write_colour(conv: torch.nn.Conv2d, unmix: torch.Tensor, from_colours: bool) -> None:
    """conv_in: +c and -c of each colour, from RGB (the encoder) or from the latent through `unmix` [3, z]."""
    conv.weight.zero_()
    conv.bias.zero_()
    for colour, (plus, minus) in enumerate(COLOUR_CHANNELS):
        if from_colours:
            conv.weight[plus, colour, 1, 1], conv.weight[minus, colour, 1, 1] = 1.0, -1.0
        else:
            conv.weight[plus, :, 1, 1] = unmix[colour].float()
            conv.weight[minus, :, 1, 1] = -unmix[colour].float()


def passthrough_ae_state(z_channels: int = 16, seed: int = 0) -> dict[str, torch.Tensor]:
    """`encoder.*` and `decoder.*` of the FLUX/SD3 `ae` layout (or FLUX.2's, with 32 channels) that pass through."""
    config = dict(AE_CONFIG, z_channels=z_channels)
    encoder, decoder = Encoder(**config), Decoder(**config)
    mix = colour_mix(z_channels, seed)
    with torch.no_grad():
        for module in (encoder, decoder):
            randomize(module, seed)
            _close_branches(module)
            _linear_norm_out(module.norm_out)
        _write_colour(encoder.conv_in, mix, from_colours=True)
        _add_constants(encoder.mid.block_2)
        _read_colour(encoder.conv_out, mix)
        _write_colour(decoder.conv_in, torch.linalg.pinv(mix), from_colours=False)
        _add_constants(decoder.up[0].block[-1])
        _read_colour(decoder.conv_out, torch.eye(3))  # RGB out: the identity mix
    state = {f"encoder.{k}": v for k, v in encoder.state_dict().items()}
    state.update({f"decoder.{k}": v for k, v in decoder.state_dict().items()})
    return state
