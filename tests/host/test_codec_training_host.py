"""The codec trainer on the real host's VAEs of latent spaces without a published codec: SD3/3.5 (the 16-channel KL
VAE), FLUX.2 (its 32-channel VAE, the host's 128-channel latent at 1/16) and Qwen-Image (the Wan 2.1 VAE, 5-D
latents).

Each VAE is the host's own class loaded from a file in its real layout (tests/support/host_vaes.py), trained on
64 px synthetic shapes. The SD3 and FLUX.2 VAEs give back what they encoded, blurred to their latent's grid
(support/passthrough_vae.py), as a trained VAE does where the method looks: its identity loss, the offset budget
and harmlessness then mean what they mean on real VAEs, and the codec trains as the paper has it, budget kept.
Held out, the codec must bring alpha back well below the error of the best constant guess (each space's bar),
and disturb the VAE's decode little: harmlessness above the VAE's own PSNR against its input (a floor that
scales with how well the VAE reproduces anything; a real VAE's is about 30 dB, these 25 dB), and for the
passthrough VAEs above 30 dB, the offset kept well inside the budget.

The Wan 2.1 VAE is random (narrowed; the host reads its width from the file): its decoder shows little of its
latent, so the codec can read alpha only from an offset that drowns the latent, and that run lifts the budget.
"""

from __future__ import annotations

import pytest
import torch
from comfyui_layer_sketch.layer_model import host_vae, trained_codec
from comfyui_layer_sketch.layer_model.alpha import composite_on_grey
from comfyui_layer_sketch.layer_model.codec_training import CodecTrainConfig, psnr
from comfyui_layer_sketch.layer_model.rgba_dataset import RGBAFolder
from comfyui_layer_sketch.layer_model.train_codec import train_codec
from comfyui_layer_sketch.layer_model.transparent_codec import CodecLayout, narrowed_channels
from support import host_vaes
from support.shapes import random_rgba, write_rgba_folder

SIDE = 64
HARMLESSNESS_MARGIN_DB = 3.0
PASSTHROUGH_HARMLESSNESS_DB = 30.0
# (VAE file kind, latent format, learning rate, steps, the discriminator's start, offset budget, bar): held-out
# alpha error against the best constant guess's. The method's aim is under half, and these runs reach it here:
# on the passthrough VAEs with lr 2e-3 and the budget kept, SD3 every 50 steps without the discriminator: 0.67,
# 0.98, 0.59, 0.55, 0.39, 0.37 (150 steps fall short, lr 4e-3 overshot); at 300 steps with it from step 200,
# SD3 0.36 and FLUX.2 0.48. Training on another CPU takes other rounding, and these short runs swing (the
# 0.98 above), so the passthrough runs are held to 0.6: a codec that learns nothing stays near 1.
# The discriminator joins late: from the start it slowed or stopped alpha's way into the latent (the random
# Wan 2.1 VAE reached 0.58 at 300 steps with it from step 0, 0.44 from step 200, 0.40 without it).
# Each passthrough run is 8 minutes here, so those two run on the newest host only.
SPACES = [pytest.param("ae_passthrough", "SD3", 2e-3, 300, 200, 1.0, 0.6, marks=pytest.mark.newest_host),
          pytest.param("flux2_passthrough", "Flux2", 2e-3, 300, 200, 1.0, 0.6, marks=pytest.mark.newest_host),
          pytest.param("wan21", "Wan21", 1e-3, 300, 200, 1e6, 0.5)]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return write_rgba_folder(tmp_path_factory.mktemp("shapes"), 48, SIDE, seed=11)  # 4 held out


@pytest.mark.newest_host  # where the passthrough runs are
@pytest.mark.parametrize("kind, latent_format", [("ae_passthrough", "SD3"), ("flux2_passthrough", "Flux2"),
                                                 ("sd_passthrough", "SDXL")])
def test_the_passthrough_vaes_give_back_what_they_encoded(fixture_cache, kind, latent_format):
    """The stand-ins hold only while the host's layers are as support/passthrough_vae.py reads them."""
    vae = host_vaes.host_vae(fixture_cache, kind)
    frozen = host_vae.HostVAE(vae, host_vae.place_vae(vae, latent_format))
    rgba = random_rgba(4, SIDE, torch.Generator().manual_seed(3))
    rgb = composite_on_grey(rgba[:, :3], rgba[:, 3:])
    with torch.no_grad():
        mean, _ = frozen.posterior(rgb)
        decoded = frozen.decode(mean)
        moved = frozen.decode(mean + mean.std() * torch.randn(mean.shape, generator=torch.Generator().manual_seed(0)))
    assert psnr(decoded, rgb) > 22.0  # 27 dB for a perfect 8x8 blur of these shapes
    assert psnr(moved, decoded) < 40.0  # the decode answers its latent


def _train(fixture_cache, kind, latent_format, folder, output, steps, learning_rate=1e-3, **settings):
    vae = host_vaes.host_vae(fixture_cache, kind)
    space = host_vae.place_vae(vae, latent_format)
    frozen = host_vae.HostVAE(vae, space)
    layout = CodecLayout(space.channels, True, 0.0, space.downscale, narrowed_channels(0.125))
    config = CodecTrainConfig(steps=steps, batch_size=4, learning_rate=learning_rate, save_every=50, **settings)
    with torch.inference_mode(False):
        return train_codec(frozen, frozen.signature, space.name, RGBAFolder(str(folder), SIDE), config, str(output),
                           layout)


@pytest.mark.parametrize("kind, latent_format, learning_rate, steps, discriminator_start, budget, bar", SPACES)
def test_a_codec_trained_for_the_space_brings_alpha_back_harmlessly(fixture_cache, shapes, tmp_path, kind,
                                                                     latent_format, learning_rate, steps,
                                                                     discriminator_start, budget, bar):
    output = tmp_path / "codec.safetensors"
    report = _train(fixture_cache, kind, latent_format, shapes, output, steps, learning_rate=learning_rate,
                    discriminator_start=discriminator_start, offset_budget=budget)
    v = report.validation
    print(f"\n{latent_format}, {steps} steps: held-out alpha error {v.alpha_error:.4f} "
          f"(constant {v.constant_alpha_error:.4f}), harmlessness {v.harmlessness_psnr:.1f} dB (VAE "
          f"{v.vae_psnr:.1f} dB), offset {v.offset_ratio:.1f} latent spreads, offset scale {report.offset_scale}, "
          f"{report.run.images_per_second(4):.2f} images/s")
    assert v.alpha_error < bar * v.constant_alpha_error
    assert v.harmlessness_psnr > v.vae_psnr - HARMLESSNESS_MARGIN_DB
    if kind.endswith("passthrough"):
        assert v.harmlessness_psnr > PASSTHROUGH_HARMLESSNESS_DB
        assert v.offset_ratio < budget
    info = trained_codec.read_info(str(output))
    space = host_vae.SPACES[latent_format]
    assert (info.latent_format, info.channels, info.downscale) == (latent_format, space.channels, space.downscale)
    assert info.validation["harmlessness_psnr"] == pytest.approx(v.harmlessness_psnr)
    assert info.validation["offset_ratio"] == pytest.approx(v.offset_ratio)


def test_the_discriminator_term_changes_the_decoder(fixture_cache, shapes, tmp_path):
    decoders = []
    for weight in (0.0, 0.01):
        output = tmp_path / f"codec_{weight}.safetensors"
        _train(fixture_cache, "wan21", "Wan21", shapes, output, 2, discriminator_weight=weight,
               discriminator_start=0)
        decoders.append(trained_codec.load_part(str(output), "decoder"))
    assert max(float((decoders[0][k] - decoders[1][k]).abs().max()) for k in decoders[0]) > 1e-6
