"""A transparency codec taught in seconds to pass alpha through a real host VAE's latent: the published encoder's
architecture and a narrow decoder, trained on random shapes (tests/support/shapes.py) at a small size.

No published weights can be downloaded in tests; what such a codec brings back shows that the pack's own encode
and decode paths (grey composite and colour fill, posterior std scaling, padding, TTA) carry alpha.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from comfyui_layer_sketch.layer_model import host
from comfyui_layer_sketch.layer_model.transparent_codec import CodecLayout, encoder_inputs, offset_latent
from comfyui_layer_sketch.layer_model.transparent_vae import DecoderConfig, TransparencyEncoder, TransparentDecoder

from .shapes import random_rgba

SIZE = 32  # training size
NARROW = DecoderConfig(block_channels=(8, 16, 16, 32, 32), attention_blocks=1)  # fast to train on a CPU


def _posterior(vae, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean, std = host.vae_posterior(vae, pixels.movedim(1, -1))
    return mean.clone(), std.clone()  # leave inference mode: these feed an autograd graph


def train_small_codec(vae, layout: CodecLayout, steps: int = 150, batch: int = 8,
                      decoder: TransparentDecoder | None = None) -> tuple[TransparencyEncoder, TransparentDecoder]:
    """(encoder, decoder) trained together for `vae`; `decoder` defaults to the NARROW one."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    encoder = layout.encoder()
    decoder = decoder or TransparentDecoder(replace(NARROW, latent_channels=layout.latent_channels))
    last = encoder.blocks[-1]
    with torch.no_grad():  # the offset is the output times offset_scale: start and learn at that scale
        last.weight.div_(layout.offset_scale)
        last.bias.div_(layout.offset_scale)
    others = [p for p in encoder.parameters() if all(p is not q for q in last.parameters())]
    optimiser = torch.optim.Adam([{"params": [*others, *decoder.parameters()]},
                                  {"params": last.parameters(), "lr": 2e-3 / layout.offset_scale}], lr=2e-3)
    for _ in range(steps):
        rgba = random_rgba(batch, SIZE, generator)
        vae_rgb, encoder_input = encoder_inputs(rgba[:, :3], rgba[:, 3:], layout)
        mean, std = _posterior(vae, vae_rgb)
        latent = offset_latent(mean, std, encoder(encoder_input), layout.offset_scale)
        decoded = vae.decode(latent.detach()).movedim(-1, 1).clone()
        prediction = decoder(decoded, latent)
        filled = encoder_input[:, 1:] if layout.alpha_first else encoder_input[:, :3]
        loss = torch.nn.functional.mse_loss(prediction[:, :1], rgba[:, 3:]) \
            + 0.1 * torch.nn.functional.mse_loss(prediction[:, 1:], filled)  # straight, colour-filled RGB
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return encoder.eval(), decoder.eval()
