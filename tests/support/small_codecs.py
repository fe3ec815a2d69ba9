"""Transparency codecs for the tests, from random host VAEs.

`train_small_codec`: taught in seconds to pass alpha through a real host VAE's latent (the published encoder's
architecture and a narrow decoder, trained on random shapes at a small size, alpha and colour losses only). What
it brings back shows that the pack's own encode and decode paths (grey composite and colour fill, posterior std
scaling, padding, TTA) carry alpha. `trained_codec_file`: made by the pack's codec trainer, identity loss
included, for tests that need adjusted latents a diffusion model can learn (near the VAE's own).

No published weights can be downloaded in tests.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import torch
from comfyui_layer_sketch.layer_model import host, host_vae
from comfyui_layer_sketch.layer_model.codec_training import CodecTrainConfig
from comfyui_layer_sketch.layer_model.rgba_dataset import RGBAFolder
from comfyui_layer_sketch.layer_model.train_codec import train_codec
from comfyui_layer_sketch.layer_model.transparent_codec import (
    CodecLayout,
    encoder_inputs,
    narrowed_channels,
    offset_latent,
)
from comfyui_layer_sketch.layer_model.transparent_vae import DecoderConfig, TransparencyEncoder, TransparentDecoder

from . import host_vaes
from .shapes import random_rgba, write_rgba_folder

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



def trained_codec_file(cache: Path, kind: str, latent_format: str, side: int = 64, steps: int = 150,
                       learning_rate: float = 2e-3) -> Path:
    """A codec for the random host VAE `kind` (support/host_vaes.py) made by the pack's own codec trainer, with
    its identity loss and offset budget (the adjusted latents stay near the VAE's own, as a diffusion model must
    see them) and a decoder an eighth of the published width, on 48 synthetic shapes at `side` px: made once
    into the fixture cache (minutes on a CPU), then reused."""
    config = CodecTrainConfig(steps=steps, batch_size=4, learning_rate=learning_rate, discriminator_weight=0.0,
                              save_every=steps)
    name = f"codec_{kind}_{latent_format}_{side}px_{steps}steps_budget{config.offset_budget:g}.safetensors"
    path = cache / name
    if path.exists():
        return path
    vae = host_vaes.host_vae(cache, kind, inference=False)
    space = host_vae.place_vae(vae, latent_format)
    frozen = host_vae.HostVAE(vae, space)
    layout = CodecLayout(space.channels, True, 0.0, space.downscale, narrowed_channels(0.125))
    with tempfile.TemporaryDirectory() as scratch:
        folder = write_rgba_folder(Path(scratch) / "shapes", 48, side, seed=11)
        output = Path(scratch) / name
        with torch.inference_mode(False):
            train_codec(frozen, frozen.signature, space.name, RGBAFolder(str(folder), side), config, str(output),
                        layout)
        shutil.move(output, path)  # without the resume state saved beside it
    return path
