"""The transparency nodes executed in-process in the real host, with weight files in the published format."""

from __future__ import annotations

import logging

import comfy.model_management as mm
import pytest
import torch
from comfyui_layer_sketch.layer_model import host, weights
from comfyui_layer_sketch.layer_model.decode_precision import DeviceTraits, codec_setup, cpu_has_native_bf16
from comfyui_layer_sketch.layer_model.weights import WeightFileError
from comfyui_layer_sketch.nodes import NODE_CLASS_MAPPINGS
from support import fixtures
from support.host_models import small_vae, tiny_model

Decode = NODE_CLASS_MAPPINGS["LayerDiffuseDecode"]
DecodeSplit = NODE_CLASS_MAPPINGS["LayerDiffuseDecodeSplit"]
Encode = NODE_CLASS_MAPPINGS["LayerDiffuseEncode"]


def _latent_and_image(batch: int, h: int, w: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return ({"samples": torch.randn(batch, 4, h // 8, w // 8, generator=generator)},
            torch.rand(batch, h, w, 3, generator=generator))


def test_decode_gives_rgba_mask_and_preview_at_a_size_not_multiple_of_64(sd15_codecs):
    samples, images = _latent_and_image(2, 96, 136)
    rgba, mask, preview = Decode().decode(samples, images, "SD1.5", "2", 8)
    assert rgba.shape == (2, 96, 136, 4) and preview.shape == (2, 96, 136, 3) and mask.shape == (2, 96, 136)
    alpha = rgba[..., 3]
    assert alpha.min() >= 0 and alpha.max() <= 1 and alpha.std() > 0.01
    torch.testing.assert_close(mask, 1.0 - alpha)  # host convention: 1 = transparent


def test_decode_with_eight_augmentations_and_host_model_management(sd15_codecs):
    samples, images = _latent_and_image(1, 64, 64)
    rgba, _, _ = Decode().decode(samples, images, "SD1.5", "8", 8)
    assert rgba.shape == (1, 64, 64, 4)
    patcher = host.load_codec("decoder", weights.SD15)
    assert any(loaded.model is patcher for loaded in mm.current_loaded_models), \
        "the decoder must be loaded through the host's model management"
    assert next(patcher.model.parameters()).dtype == (torch.float32 if mm.get_torch_device().type == "cpu"
                                                      else torch.float16)


def test_auto_version_follows_the_connected_model(sd15_codecs):
    samples, images = _latent_and_image(1, 64, 64)
    rgba, _, _ = Decode().decode(samples, images, "auto", "1", 8, model=tiny_model("SD15"))
    assert rgba.shape[-1] == 4
    # An SDXL model asks for the SDXL decoder, which is not in the folder (and downloads are off).
    with pytest.raises(WeightFileError, match="vae_transparent_decoder.safetensors"):
        Decode().decode(samples, images, "auto", "1", 8, model=tiny_model("SDXL"))
    with pytest.raises(ValueError, match="no MODEL is connected"):
        Decode().decode(samples, images, "auto", "1", 8)


def test_missing_file_error_names_folder_and_url(layer_folder):
    samples, images = _latent_and_image(1, 64, 64)
    with pytest.raises(WeightFileError) as err:
        Decode().decode(samples, images, "SD1.5", "1", 8)
    message = str(err.value)
    assert str(layer_folder) in message and weights.REVISION in message
    assert "layer_sd15_vae_transparent_decoder.safetensors" in message


def test_size_mismatch_is_refused_before_any_weight_is_needed(layer_folder):
    samples, _ = _latent_and_image(1, 64, 64)
    with pytest.raises(ValueError, match="Connect the IMAGE that VAE Decode produced"):
        Decode().decode(samples, torch.rand(1, 72, 64, 3), "SD1.5", "8", 8)


def test_wrong_kind_and_truncated_files_are_reported(layer_folder, fixture_cache):
    target = layer_folder / "layer_sd15_vae_transparent_decoder.safetensors"
    samples, images = _latent_and_image(1, 64, 64)
    target.write_bytes(fixtures.encoder_file(fixture_cache).read_bytes())  # an encoder under the decoder's name
    with pytest.raises(WeightFileError, match="does not hold a LayerDiffusion transparent decoder"):
        Decode().decode(samples, images, "SD1.5", "1", 8)
    fixtures.truncated_copy(fixtures.decoder_file(fixture_cache), target)
    with pytest.raises(WeightFileError, match="truncated or corrupt"):
        Decode().decode(samples, images, "SD1.5", "1", 8)


def test_split_decodes_the_first_layer_and_passes_the_others(sd15_codecs):
    samples, images = _latent_and_image(6, 64, 64)
    first, mask, second, third, preview = DecodeSplit().decode(samples, images, 3, "SD1.5", "1", 8)
    assert first.shape == (2, 64, 64, 4) and mask.shape == (2, 64, 64) and preview.shape == (2, 64, 64, 3)
    assert torch.equal(second, images[1::3]) and torch.equal(third, images[2::3])
    single, _, _ = Decode().decode({"samples": samples["samples"][0::3]}, images[0::3], "SD1.5", "1", 8)
    torch.testing.assert_close(first, single)
    first, _, second, third, _ = DecodeSplit().decode(*_latent_and_image(4, 64, 64), 2, "SD1.5", "1", 8)
    assert first.shape[0] == 2 and torch.equal(second, third)


def test_split_refuses_a_batch_that_is_not_a_multiple_of_the_layers(layer_folder):
    with pytest.raises(ValueError, match="not a multiple of 3 layers"):
        DecodeSplit().decode(*_latent_and_image(4, 64, 64), 3, "SD1.5", "1", 8)


def _rgba(batch: int = 1, h: int = 64, w: int = 64) -> torch.Tensor:
    image = torch.rand(batch, h, w, 4, generator=torch.Generator().manual_seed(3))
    image[..., 3] = 0.0
    image[:, h // 4: 3 * h // 4, w // 4: 3 * w // 4, 3] = 1.0
    return image


def test_encode_adds_the_offset_to_the_host_vae_mean(sd15_codecs):
    vae = small_vae()
    image = _rgba()
    (latent,) = Encode().encode(image, vae, "SD1.5")
    assert latent["samples"].shape == (1, 4, 8, 8)

    # With a zero offset (the published encoder's output layer starts at zero) the latent is exactly
    # the posterior mean, which is what the host's own VAE.encode returns for the grey composite.
    zero = fixtures.random_encoder_state(zero_last=True)
    fixtures._save(zero, sd15_codecs / "layer_sd15_vae_transparent_encoder.safetensors")
    (mean_only,) = Encode().encode(image, vae, "SD1.5")
    from comfyui_layer_sketch.layer_model.transparent_codec import encoder_inputs
    on_grey, _ = encoder_inputs(image[..., :3].movedim(-1, 1), image[..., 3:].movedim(-1, 1))
    torch.testing.assert_close(on_grey, 0.5 + (image[..., :3] - 0.5).movedim(-1, 1) * image[..., 3:].movedim(-1, 1))
    torch.testing.assert_close(mean_only["samples"], vae.encode(on_grey.movedim(1, -1)), atol=1e-4, rtol=1e-4)
    assert (latent["samples"] - mean_only["samples"]).abs().max() > 1e-3


def test_encode_takes_a_mask_as_alpha(sd15_codecs):
    vae, image = small_vae(), _rgba()
    (from_rgba,) = Encode().encode(image, vae, "SD1.5")
    (from_mask,) = Encode().encode(image[..., :3], vae, "SD1.5", mask=1.0 - image[..., 3])
    torch.testing.assert_close(from_rgba["samples"], from_mask["samples"])


def test_encode_refuses_rgb_without_mask_and_mismatched_masks(layer_folder):
    vae, image = small_vae(), _rgba()
    with pytest.raises(ValueError, match="3 channels and no mask"):
        Encode().encode(image[..., :3], vae, "SD1.5")
    with pytest.raises(ValueError, match="mask is 32x32 px but the image is 64x64"):
        Encode().encode(image[..., :3], vae, "SD1.5", mask=torch.zeros(1, 32, 32))


def test_each_precision_through_the_node_and_the_gpu_set_up_run_on_this_cpu(sd15_codecs):
    samples, images = _latent_and_image(2, 64, 64, seed=3)
    reference, _, _ = Decode().decode(samples, images, "SD1.5", "4", 8, precision="fp32")
    for precision in ("auto", "bf16", "fp16"):
        rgba, _, _ = Decode().decode(samples, images, "SD1.5", "4", 8, precision=precision)
        assert 0 < (rgba - reference).abs().max() <= 3e-2 or precision == "auto", precision
    # The GPU branch (fp16, channels_last, several passes at once as memory allows), forced on this device.
    gpu = DeviceTraits(kind="cuda", fp16_fast=True, bf16_supported=True)
    batch_sizes: list[int] = []
    patcher = host.load_codec("decoder", weights.SD15, codec_setup("auto", gpu))
    hook = patcher.model.register_forward_pre_hook(lambda module, args: batch_sizes.append(args[0].shape[0]))
    try:
        rgba = host.decode_rgba_batch(samples["samples"], images.movedim(-1, 1), weights.SD15, 4, 8, "auto", gpu)
    finally:
        hook.remove()
    assert next(patcher.model.parameters()).dtype == torch.float16
    assert patcher.model.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert max(batch_sizes) > 1, "the GPU set-up runs several decoder passes at once"
    assert (rgba.movedim(1, -1) - reference).abs().max() <= 1e-2


def test_bf16_on_a_cpu_without_bf16_instructions_runs_with_a_warning(sd15_codecs, monkeypatch, caplog):
    """Emulated bf16 is slower than fp32 (1.30x the older pack's fp32 decode, `auto` 0.74x): the node says so."""
    if mm.get_torch_device().type != "cpu":
        pytest.skip("the host runs on a GPU here")
    assert host.device_traits(torch.device("cpu")).bf16_native == cpu_has_native_bf16()
    samples, images = _latent_and_image(1, 64, 64)
    monkeypatch.setattr(host, "cpu_has_native_bf16", lambda: False)
    with caplog.at_level(logging.WARNING):
        Decode().decode(samples, images, "SD1.5", "1", 1, precision="auto")
    assert not [record for record in caplog.records if "bf16" in record.getMessage()]
    with caplog.at_level(logging.WARNING):
        rgba, _, _ = Decode().decode(samples, images, "SD1.5", "1", 1, precision="bf16")
    assert rgba.shape == (1, 64, 64, 4)
    assert [record.getMessage() for record in caplog.records if "bf16" in record.getMessage()] == [
        "Layer Diffuse: precision 'bf16' on a CPU without bf16 instructions (x86: AVX512_BF16 or AMX; Arm: BF16) "
        "is emulated, slower than fp32 and less exact: set precision to 'auto'."]


def test_a_precision_the_device_cannot_run_is_refused_before_loading(layer_folder):
    samples, images = _latent_and_image(1, 64, 64)
    old_gpu = DeviceTraits(kind="cuda", fp16_fast=True, bf16_supported=False)
    with pytest.raises(ValueError, match="cannot compute in bf16"):
        host.decode_rgba_batch(samples["samples"], images.movedim(-1, 1), weights.SD15, 1, 1, "bf16", old_gpu)
