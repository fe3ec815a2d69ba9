"""The codec trainer's pure parts on a stand-in VAE (a fixed random convolutional autoencoder in plain torch):
data, the codec's shapes at 1/8 and 1/16, the losses acting, held-out alpha, files, saved state and resume.
The real host's VAEs are in tests/host/test_codec_training_host.py."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from comfyui_layer_sketch.layer_model import trained_codec
from comfyui_layer_sketch.layer_model.codec_training import CodecTrainConfig, latent_spread, measured_offset_scale
from comfyui_layer_sketch.layer_model.rgba_dataset import RGBADatasetError, RGBAFolder, held_out_count
from comfyui_layer_sketch.layer_model.train_codec import OtherRunError, train_codec
from comfyui_layer_sketch.layer_model.transparent_codec import CodecLayout, narrowed_channels
from comfyui_layer_sketch.layer_model.transparent_vae import TransparencyEncoder
from support.shapes import write_rgba_folder

SIDE = 64
NARROW = narrowed_channels(0.125)


class StandInVAE:
    """A fixed random autoencoder with a diagonal Gaussian posterior, latents at 1/`downscale`."""

    device = torch.device("cpu")

    def __init__(self, channels: int = 4, downscale: int = 8, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.downscale = downscale
        self.to_latent = torch.randn(2 * channels, 3, generator=generator)
        self.to_rgb = torch.randn(3, channels, generator=generator) / channels**0.5

    def posterior(self, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        moments = torch.einsum("kc,bchw->bkhw", self.to_latent, F.avg_pool2d(rgb * 2 - 1, self.downscale))
        mean, logvar = moments.chunk(2, dim=1)
        return mean, torch.exp(0.5 * (logvar.tanh() - 3))

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        rgb = torch.einsum("ck,bkhw->bchw", self.to_rgb, latent)
        return torch.sigmoid(F.interpolate(rgb, scale_factor=self.downscale, mode="bilinear", align_corners=False))


def layout(channels: int = 4, downscale: int = 8) -> CodecLayout:
    return CodecLayout(channels, alpha_first=True, offset_scale=0.0, downscale=downscale, decoder_channels=NARROW)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return write_rgba_folder(tmp_path_factory.mktemp("shapes"), 40, SIDE, opaque=2, without_alpha=3)


def train(folder, output, steps=8, **settings) -> object:
    config = CodecTrainConfig(steps=steps, batch_size=4, learning_rate=settings.pop("learning_rate", 1e-3),
                              save_every=4, **settings)
    return train_codec(StandInVAE(), "stand-in", "SD15", RGBAFolder(str(folder), SIDE), config, str(output), layout())


def test_the_folder_skips_what_carries_no_transparency_and_holds_some_out(shapes, tmp_path):
    dataset = RGBAFolder(str(shapes), SIDE)
    assert dataset.scan.summary() == "40 transparent images; skipped 3 without an alpha channel, 2 fully opaque"
    assert len(dataset.validation) == held_out_count(40) == 4 and len(dataset) == 36
    assert not set(dataset.validation) & set(dataset.paths)
    crop = dataset.crop(0, torch.Generator().manual_seed(0))
    assert crop.shape == (1, 4, SIDE, SIDE) and 0 < float(crop[:, 3].mean()) < 1
    assert torch.equal(crop, dataset.crop(0, torch.Generator().manual_seed(0)))
    (tmp_path / "empty").mkdir()
    with pytest.raises(RGBADatasetError, match="no usable transparent image"):
        RGBAFolder(str(tmp_path / "empty"), SIDE)
    with pytest.raises(RGBADatasetError, match="multiple of 64"):
        RGBAFolder(str(shapes), 48)


def test_larger_images_are_scaled_without_the_hidden_colour_bleeding_in(tmp_path):
    folder = write_rgba_folder(tmp_path / "big", 1, 2 * SIDE, seed=3)
    image = RGBAFolder(str(folder), SIDE).crop(0, torch.Generator().manual_seed(0))
    assert image.shape == (1, 4, SIDE, SIDE)
    opaque = image[:, 3:] > 0.99
    assert opaque.any() and (~opaque).any()


@pytest.mark.parametrize("channels, downscale", [(4, 8), (16, 8), (128, 16)])
def test_the_codec_reaches_latents_at_their_scale(channels, downscale):
    codec = layout(channels, downscale)
    rgb, latent = torch.rand(1, 3, SIDE, SIDE), torch.randn(1, channels, SIDE // downscale, SIDE // downscale)
    assert codec.encoder()(torch.rand(1, 4, SIDE, SIDE)).shape == latent.shape
    assert codec.decoder()(rgb, latent).shape == (1, 4, SIDE, SIDE)


def test_the_published_encoder_layout_is_kept_at_one_eighth():
    keys = {k: tuple(v.shape) for k, v in TransparencyEncoder(4).state_dict().items()}
    assert len(keys) == 18 and keys["blocks.16.weight"] == (4, 256, 3, 3)
    wider = TransparencyEncoder(128, 16).state_dict()
    assert wider["blocks.20.weight"].shape == (128, 256, 3, 3) and wider["blocks.16.weight"].shape[1] == 256


def test_the_latent_spread_is_the_rms_about_each_channels_mean():
    latents = torch.zeros(2, 2, 4, 4)
    latents[:, 0] = 5.0  # a constant channel spreads nowhere, however far from zero
    latents[0, 1], latents[1, 1] = 2.0, -2.0
    assert latent_spread(latents) == pytest.approx((4.0 / 2) ** 0.5)


def test_the_offset_budget_holds_the_offset_in_the_latents_spread(shapes, tmp_path):
    settings = {"steps": 12, "learning_rate": 1e-2, "discriminator_weight": 0.0}
    free = train(shapes, tmp_path / "free.safetensors", offset_budget=1e6, **settings).validation
    held = train(shapes, tmp_path / "held.safetensors", offset_budget=0.05, **settings).validation
    print(f"\noffset in latent spreads: {free.offset_ratio:.3f} free, {held.offset_ratio:.3f} within a budget of 0.05")
    assert free.offset_ratio > 0.1, "the offset must grow past the budget when nothing holds it"
    assert held.offset_ratio < 0.075
    assert trained_codec.read_info(str(tmp_path / "held.safetensors")).validation["offset_ratio"] == pytest.approx(
        held.offset_ratio)


def test_the_offset_scale_makes_one_unit_about_one_latent_unit():
    assert measured_offset_scale(torch.full((2, 4, 8, 8), 0.02)) == 50.0
    assert measured_offset_scale(torch.full((1, 16, 4, 4), 3.0)) == 0.33


def test_a_trained_codec_brings_alpha_back_on_held_out_images(shapes, tmp_path):
    output = tmp_path / "codec.safetensors"
    report = train(shapes, output, steps=200, learning_rate=5e-4)
    v = report.validation
    print(f"\nheld out: alpha error {v.alpha_error:.4f} vs constant {v.constant_alpha_error:.4f}, harmlessness "
          f"{v.harmlessness_psnr:.1f} dB, identity {v.identity_psnr:.1f} dB; last {report.recent(10)}")
    assert v.alpha_error < 0.5 * v.constant_alpha_error
    assert v.harmlessness_psnr > 20.0
    info = trained_codec.read_info(str(output))
    assert info.latent_format == "SD15" and info.steps == 200 and info.offset_scale == report.offset_scale > 0
    assert info.validation["alpha_error"] == pytest.approx(v.alpha_error)
    assert set(trained_codec.load_part(str(output), "encoder")) == set(TransparencyEncoder(4).state_dict())
    assert info.layout.decoder().load_state_dict(trained_codec.load_part(str(output), "decoder"), strict=True)


def test_the_discriminator_term_changes_the_decoder(shapes, tmp_path):
    decoders = []
    for weight in (0.0, 0.01):
        output = tmp_path / f"codec_{weight}.safetensors"
        train(shapes, output, steps=3, discriminator_weight=weight, discriminator_start=0)
        decoders.append(trained_codec.load_part(str(output), "decoder"))
    difference = max(float((decoders[0][k] - decoders[1][k]).abs().max()) for k in decoders[0])
    assert difference > 1e-6


def test_the_discriminator_joins_at_its_start_step(shapes, tmp_path):
    report = train(shapes, tmp_path / "codec.safetensors", steps=4, discriminator_start=2)
    assert [t["adversarial"] == 0 and t["discriminator"] == 0 for t in report.terms] == [True, True, False, False]


def test_an_interrupted_run_resumes_to_the_same_codec(shapes, tmp_path):
    straight, broken = tmp_path / "straight.safetensors", tmp_path / "broken.safetensors"
    train(shapes, straight, steps=8, discriminator_start=2)  # the discriminator's state crosses the break
    train(shapes, broken, steps=4, discriminator_start=2)  # as if stopped after its state at step 4
    resumed = train(shapes, broken, steps=8, discriminator_start=2)
    assert resumed.run.resumed_from == 4 and len(resumed.terms) == 8
    a, b = (trained_codec.load_part(str(p), "decoder") for p in (straight, broken))
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5


def test_a_saved_run_of_other_settings_is_refused_and_kept(shapes, tmp_path):
    output = tmp_path / "codec.safetensors"
    train(shapes, output, steps=4)
    state = tmp_path / "codec.safetensors.train-state"
    before = state.read_bytes()
    with pytest.raises(OtherRunError, match=r"another run \(config.learning_rate: saved 0.001, now 0.0005"):
        train(shapes, output, steps=4, learning_rate=5e-4)
    assert state.read_bytes() == before
    with pytest.raises(OtherRunError, match="Nothing to resume"):
        train_codec(StandInVAE(), "stand-in", "SD15", RGBAFolder(str(shapes), SIDE), CodecTrainConfig(steps=2),
                    str(tmp_path / "new.safetensors"), layout(), require_resume=True)


def test_an_unwritable_output_is_refused_before_training(shapes, tmp_path):
    not_a_folder = tmp_path / "notes.txt"
    not_a_folder.write_text("a file where the output's folder should be")
    with pytest.raises(ValueError, match="Cannot create the folder for the codec file"):
        train(shapes, not_a_folder / "codec.safetensors", steps=1)
