"""Decode and Encode with a trained codec on the real host: the `codec` list, each latent space a published codec
does not cover (SD3, FLUX.2, Qwen-Image) through a MODEL of that family, the host's VAEs of those spaces, and the
refusals that name both sides before any weight is loaded.

The codecs are random and narrow (an eighth of the published decoder's width), written in the trainer's file format.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import comfy.latent_formats
import comfy.model_management as mm
import pytest
import torch
from comfyui_layer_sketch.layer_model import host
from comfyui_layer_sketch.layer_model.codec_choice import PUBLISHED_SETS
from comfyui_layer_sketch.layer_model.latent_spaces import SPACES
from comfyui_layer_sketch.layer_model.trained_codec import CodecInfo, save_codec
from comfyui_layer_sketch.layer_model.transparent_codec import encoder_inputs, narrowed_channels
from comfyui_layer_sketch.nodes import NODE_CLASS_MAPPINGS
from support import fixtures
from support.host_vaes import host_vae
from support.space_models import MODELS

from nodes import VAEDecode, VAEEncode

Decode = NODE_CLASS_MAPPINGS["LayerDiffuseDecode"]
DecodeSplit = NODE_CLASS_MAPPINGS["LayerDiffuseDecodeSplit"]
Encode = NODE_CLASS_MAPPINGS["LayerDiffuseEncode"]

CODEC_FILES = {"SD3": "sd3_codec.safetensors", "Flux2": "flux2_codec.safetensors", "Wan21": "qwen_codec.safetensors",
               "SD15": "sd15_codec.safetensors"}  # by latent format
VAE_KIND = {"SD3": "ae", "Flux2": "flux2", "Wan21": "wan21"}  # tests/support/host_vaes.py
OFFSET_SCALE = 0.5
SIZE = 64


def write_codec(path: Path, latent_format: str, seed: int = 0) -> CodecInfo:
    """A random codec of the latent space, narrow, saved as the trainer saves one (SD3's reads colour first)."""
    space = SPACES[latent_format]
    info = CodecInfo(space.name, space.channels, space.downscale, OFFSET_SCALE, alpha_first=space.name != "SD3",
                     decoder_channels=narrowed_channels(0.125))
    torch.manual_seed(seed)
    save_codec(str(path), info.layout.encoder(), info.layout.decoder(), info)
    return info


@pytest.fixture
def codecs(layer_folder, fixture_cache) -> Path:
    """The trained codecs, beside a published file and another safetensors file (neither is listed)."""
    for seed, (latent_format, name) in enumerate(CODEC_FILES.items()):
        write_codec(layer_folder / name, latent_format, seed)
    shutil.copy(fixtures.decoder_file(fixture_cache), layer_folder / "layer_sd15_vae_transparent_decoder.safetensors")
    fixtures._save({"weight": torch.zeros(2)}, layer_folder / "some_lora.safetensors")
    return layer_folder


def latent_of(latent_format: str, batch: int = 1, size: int = SIZE, seed: int = 0) -> torch.Tensor:
    """A LATENT's samples of the space as the host's sampler gives them (Qwen-Image's with one frame)."""
    space = SPACES[latent_format]
    side = size // space.downscale
    shape = (batch, space.channels, 1, side, side) if space.frames else (batch, space.channels, side, side)
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def images_of(batch: int = 1, size: int = SIZE) -> torch.Tensor:
    return torch.rand(batch, size, size, 3, generator=torch.Generator().manual_seed(1))


def _rgba(batch: int = 1, size: int = SIZE) -> torch.Tensor:
    image = torch.rand(batch, size, size, 4, generator=torch.Generator().manual_seed(3))
    image[..., 3] = 0.0
    image[:, size // 4: 3 * size // 4, size // 4: 3 * size // 4, 3] = 1.0
    return image


def _nothing_loaded_from(folder: Path) -> bool:
    return not any(str(folder) in key[0] for key in host._loaded)


def test_the_codec_list_holds_the_trained_files_only(codecs):
    for node in (Decode, DecodeSplit, Encode):
        choices, options = node.INPUT_TYPES()["optional"]["codec"]
        assert choices == ["published", *PUBLISHED_SETS, *sorted(CODEC_FILES.values())], node.__name__
        assert options["default"] == "published" and "Train Transparent VAE" in options["tooltip"]
    # Each file's header is read once per version of it; a new file appears at the next refresh.
    write_codec(codecs / "later.safetensors", "Flux2")
    assert "later.safetensors" in host.codec_choices()


@pytest.mark.parametrize("latent_format", sorted(SPACES))
def test_auto_reads_every_latent_space_from_the_model(latent_format):
    assert host.model_space(MODELS[latent_format]()) is SPACES[latent_format]


def test_a_model_of_another_latent_format_is_refused_by_name(codecs):
    model = MODELS["Wan21"]()
    model.model.latent_format = comfy.latent_formats.Wan22()  # Wan 2.2's 48-channel space subclasses Wan21's
    with pytest.raises(ValueError, match=r"samples Wan22 latents; transparency codecs exist or can be trained only "
                                         r"for SD1.5, SDXL, FLUX.1, SD3/3.5, FLUX.2, Qwen-Image"):
        Decode().decode({"samples": latent_of("Wan21")}, images_of(), "auto", "1", 8, model=model,
                        codec=CODEC_FILES["Wan21"])


@pytest.mark.parametrize("latent_format", ["SD3", "Flux2", "Wan21"])
def test_decode_with_the_model_of_each_space(codecs, latent_format):
    name = CODEC_FILES[latent_format]
    samples, images = {"samples": latent_of(latent_format, batch=2)}, images_of(batch=2)
    rgba, mask, preview = Decode().decode(samples, images, "auto", "1", 8, model=MODELS[latent_format](), codec=name)
    assert rgba.shape == (2, SIZE, SIZE, 4) and mask.shape == (2, SIZE, SIZE) and preview.shape == (2, SIZE, SIZE, 3)
    alpha = rgba[..., 3]
    assert alpha.min() >= 0 and alpha.max() <= 1 and alpha.std() > 1e-4
    torch.testing.assert_close(mask, 1.0 - alpha)
    patcher = host.load_codec("decoder", host.trained_codec_named(name))
    assert any(loaded.model is patcher for loaded in mm.current_loaded_models), "loaded through model management"
    assert next(patcher.model.parameters()).dtype == (torch.float32 if mm.get_torch_device().type == "cpu"
                                                      else torch.float16)
    # Without a MODEL, the latent's shape allows the codec's space: the same result.
    by_shape, _, _ = Decode().decode(samples, images, "auto", "1", 8, codec=name)
    torch.testing.assert_close(by_shape, rgba)


def test_split_decodes_the_first_layer_with_a_trained_codec(codecs):
    samples, images = {"samples": latent_of("Wan21", batch=4)}, images_of(batch=4)
    first, mask, second, _, _ = DecodeSplit().decode(samples, images, 2, "auto", "1", 8, model=MODELS["Wan21"](),
                                                     codec=CODEC_FILES["Wan21"])
    assert first.shape == (2, SIZE, SIZE, 4) and mask.shape == (2, SIZE, SIZE) and torch.equal(second, images[1::2])


@pytest.mark.parametrize("latent_format", ["SD3", "Flux2", "Wan21"])
def test_encode_then_decode_round_trips_the_shapes(codecs, fixture_cache, latent_format):
    name, space = CODEC_FILES[latent_format], SPACES[latent_format]
    vae, model, rgba = host_vae(fixture_cache, VAE_KIND[latent_format]), MODELS[latent_format](), _rgba()
    (latent,) = Encode().encode(rgba, vae, "auto", model=model, codec=name)
    with torch.inference_mode():  # as the host runs nodes: the VAE's weights are inference tensors
        (plain,) = VAEEncode().encode(vae, rgba[..., :3])
    assert latent["samples"].shape == plain["samples"].shape, "shaped as VAE Encode's latent"
    side = SIZE // space.downscale
    assert latent["samples"].shape == ((1, space.channels, 1, side, side) if space.frames
                                       else (1, space.channels, side, side))

    # The offset: the codec's encoder output times its offset_scale, in posterior std units, in its input order.
    codec = host.trained_codec_named(name)
    vae_rgb, encoder_input = encoder_inputs(rgba[..., :3].movedim(-1, 1), rgba[..., 3:].movedim(-1, 1), codec.layout)
    mean, std = host.vae_posterior(vae, vae_rgb.movedim(1, -1), space=space)
    encoder = host.prepare(host.load_codec("encoder", codec))
    with torch.inference_mode():
        offset = encoder(encoder_input.to(next(encoder.parameters()))).float().to(mean.device)
    expected = mean + std * offset * OFFSET_SCALE
    torch.testing.assert_close(latent["samples"].reshape(expected.shape), expected, rtol=1e-4, atol=1e-3)
    assert (offset.abs().max() > 1e-3), "the random encoder gives an offset"

    with torch.inference_mode():
        (images,) = VAEDecode().decode(vae, latent)
    assert images.shape == (1, SIZE, SIZE, 3)
    decoded, mask, _ = Decode().decode(latent, images, "auto", "1", 8, model=model, codec=name)
    assert decoded.shape == (1, SIZE, SIZE, 4) and mask.shape == (1, SIZE, SIZE)
    assert decoded[..., 3].min() >= 0 and decoded[..., 3].max() <= 1


def test_encode_of_a_batch_keeps_one_frame_per_image_for_qwen_image(codecs, fixture_cache):
    vae = host_vae(fixture_cache, "wan21")
    (latent,) = Encode().encode(_rgba(batch=2), vae, "auto", codec=CODEC_FILES["Wan21"])
    assert latent["samples"].shape == (2, 16, 1, SIZE // 8, SIZE // 8)


def test_a_codec_of_another_space_than_the_model_is_refused_naming_both(codecs):
    samples, images = {"samples": latent_of("SD3")}, images_of()
    with pytest.raises(ValueError, match=r"^The codec sd3_codec.safetensors was trained for SD3/3.5 latents, but the "
                                         r"connected MODEL \(Flux\) samples FLUX.1 latents. Choose a codec trained for "
                                         r"FLUX.1 latents \(or 'published'\), or connect the SD3/3.5 model"):
        Decode().decode(samples, images, "auto", "1", 8, model=MODELS["Flux"](), codec=CODEC_FILES["SD3"])
    sd = {"samples": latent_of("SDXL")}
    with pytest.raises(ValueError, match=r"sd15_codec.safetensors was trained for SD1.5 latents, but the connected "
                                         r"MODEL \(SDXL\) samples SDXL latents"):
        Decode().decode(sd, images, "auto", "1", 8, model=MODELS["SDXL"](), codec=CODEC_FILES["SD15"])
    with pytest.raises(ValueError, match=r"sd3_codec.safetensors was trained for SD3/3.5 latents, but sd_version is "
                                         r"FLUX, for FLUX.1 latents.*set sd_version to 'auto' and connect the MODEL"):
        Decode().decode(samples, images, "FLUX", "1", 8, codec=CODEC_FILES["SD3"])
    with pytest.raises(ValueError, match=r"flux2_codec.safetensors was trained for FLUX.2 latents, but the connected "
                                         r"MODEL \(QwenImage\) samples Qwen-Image \(Wan 2.1 VAE\) latents"):
        Encode().encode(_rgba(), object(), "auto", model=MODELS["Wan21"](), codec=CODEC_FILES["Flux2"])  # VAE unread
    assert _nothing_loaded_from(codecs), "refused before any weight is loaded"


def test_a_latent_or_vae_of_another_space_than_the_codec_is_refused(codecs, fixture_cache):
    images = images_of()
    with pytest.raises(ValueError, match=r"^The latent has 16 channels, but the codec flux2_codec.safetensors was "
                                         r"trained for FLUX.2 latents, which have 128"):
        Decode().decode({"samples": latent_of("SD3")}, images, "auto", "1", 8, codec=CODEC_FILES["Flux2"])
    with pytest.raises(ValueError, match=r"The latent has 16 channels, but the codec flux2_codec.safetensors"):
        Decode().decode({"samples": latent_of("SD3")}, images, "auto", "1", 8, model=MODELS["Flux2"](),
                        codec=CODEC_FILES["Flux2"])
    with pytest.raises(ValueError, match=r"^The latent has the shape \[1, 16, 1, 8, 8\], but the codec "
                                         r"sd3_codec.safetensors was trained for SD3/3.5 latents, \[B, 16, h, w\]"):
        Decode().decode({"samples": latent_of("Wan21")}, images, "auto", "1", 8, codec=CODEC_FILES["SD3"])
    with pytest.raises(ValueError, match=r"The latent is 8x8 \(an image of 128x128 px\) but the image is 64x64"):
        Decode().decode({"samples": latent_of("Flux2", size=128)}, images, "auto", "1", 8, codec=CODEC_FILES["Flux2"])
    with pytest.raises(ValueError, match=r"^The codec sd3_codec.safetensors was trained for SD3/3.5 latents, but the "
                                         r"connected VAE encodes to FLUX.2 latents. Connect the SD3/3.5 VAE"):
        Encode().encode(_rgba(), host_vae(fixture_cache, "flux2"), "auto", codec=CODEC_FILES["SD3"])
    with pytest.raises(ValueError, match=r"holds 3 frames \(a video latent"):
        Decode().decode({"samples": torch.zeros(1, 16, 3, 8, 8)}, images, "auto", "1", 8, codec=CODEC_FILES["Wan21"])
    assert _nothing_loaded_from(codecs), "refused before any weight is loaded"


@pytest.mark.parametrize("latent_format", ["SD3", "Flux2", "Wan21"])
def test_published_for_a_space_without_one_tells_to_train_one(codecs, latent_format):
    label = SPACES[latent_format].label.replace("(", r"\(").replace(")", r"\)")
    model = MODELS[latent_format]()
    with pytest.raises(ValueError, match=rf"^The connected MODEL \({type(model.model.model_config).__name__}\) "
                                         rf"samples {label} latents, and no published transparency codec exists for "
                                         r"them \(only for SD1.5, SDXL and FLUX.1\). Train one for its VAE with the "
                                         r"node Layer Diffuse Train Transparent VAE, then choose that file in codec."):
        Decode().decode({"samples": latent_of(latent_format)}, images_of(), "auto", "1", 8, model=model)
    with pytest.raises(ValueError, match="no published transparency codec"):
        Encode().encode(_rgba(), object(), "auto", model=model)


def test_published_without_a_model_tells_to_train_one_where_the_data_says_the_space(codecs, fixture_cache):
    with pytest.raises(ValueError, match=r"^The latent's shape is that of FLUX.2 latents, and no published"):
        Decode().decode({"samples": latent_of("Flux2")}, images_of(), "auto", "1", 8)
    with pytest.raises(ValueError, match=r"^The latent's shape is that of Qwen-Image \(Wan 2.1 VAE\) latents"):
        Decode().decode({"samples": latent_of("Wan21")}, images_of(), "auto", "1", 8)
    with pytest.raises(ValueError, match=r"^The latent has the shape \[1, 16, 1, 8, 8\] \(Qwen-Image \(Wan 2.1 VAE\) "
                                         r"latent\), but the published FLUX codec reads FLUX latents"):
        Decode().decode({"samples": latent_of("Wan21")}, images_of(), "FLUX", "1", 8)
    with pytest.raises(ValueError, match=r"^The connected VAE encodes to FLUX.2 latents, and no published"):
        Encode().encode(_rgba(), host_vae(fixture_cache, "flux2"), "auto")
    assert _nothing_loaded_from(codecs)


def test_a_missing_or_untrained_file_is_refused(codecs):
    samples, images = {"samples": latent_of("SD3")}, images_of()
    with pytest.raises(ValueError, match=r"The codec file gone.safetensors is not in the layer_model folders"):
        Decode().decode(samples, images, "auto", "1", 8, codec="gone.safetensors")
    with pytest.raises(ValueError, match=r"layer_sd15_vae_transparent_decoder.safetensors is not a trained "
                                         r"transparency codec"):
        Decode().decode(samples, images, "auto", "1", 8, codec="layer_sd15_vae_transparent_decoder.safetensors")


def test_published_by_sd_version_ignores_the_model_as_before(sd15_codecs):
    model = MODELS["SD15"]()
    model.model.latent_format = comfy.latent_formats.SD_X4()  # a format no codec is for
    rgba, _, _ = Decode().decode({"samples": latent_of("SD15")}, images_of(), "SD1.5", "1", 8, model=model)
    assert rgba.shape == (1, SIZE, SIZE, 4)
    with pytest.raises(ValueError, match=r"samples SD_X4 latents; transparency codecs exist"):
        Decode().decode({"samples": latent_of("SD15")}, images_of(), "auto", "1", 8, model=model)
