"""Layer Diffuse RGBA Training Dataset on the real host: a folder of transparent images with captions becomes latents
that decode back to their alpha through Layer Diffuse Decode, and conditioning from the host's CLIP; both feed the
host's own Train LoRA (a couple of steps, fixed size and mixed sizes, through Resolution Bucket where the host has
it). Families of FLUX.1's latents (Z-Image, Lumina 2, Chroma, HiDream) get the FLUX codec from 'auto' and a clear
refusal from the FLUX.1 LoRA; bad inputs are refused before any weight or image is loaded.

The codec is taught in seconds for the small host VAE (support/small_codecs.py) and saved as the codec trainer
saves one; the MODEL is the tiny SD1.5 UNet, the CLIP the random SD1.5 checkpoint's.
"""

from __future__ import annotations

import importlib
import importlib.util

import pytest
import torch
from comfyui_layer_sketch.layer_model import host
from comfyui_layer_sketch.layer_model.lora_dataset import load_training_image
from comfyui_layer_sketch.layer_model.rgba_dataset import RGBADatasetError
from comfyui_layer_sketch.layer_model.trained_codec import CodecInfo, save_codec
from comfyui_layer_sketch.layer_model.transparent_codec import CodecLayout
from comfyui_layer_sketch.nodes import NODE_CLASS_MAPPINGS
from support.flux_models import small_flux_vae
from support.host_models import loader_model, small_vae
from support.shapes import write_rgba_folder
from support.small_codecs import SIZE, train_small_codec
from support.space_models import FLUX_LATENT_FAMILIES, tiny_sd3, weightless_model

Dataset = NODE_CLASS_MAPPINGS["LayerDiffuseRGBATrainingDataset"]
Decode = NODE_CLASS_MAPPINGS["LayerDiffuseDecode"]
Apply = NODE_CLASS_MAPPINGS["LayerDiffuseApply"]
CODEC = "small_sd15_codec.safetensors"
LAYOUT = CodecLayout(4, alpha_first=True, offset_scale=1.0, decoder_channels=(8, 16, 16, 32, 32))


def _host_node(module: str, name: str):
    """A node class of the host's comfy_extras, or None where this host has no such module or node."""
    if importlib.util.find_spec(f"comfy_extras.{module}") is None:
        return None
    return getattr(importlib.import_module(f"comfy_extras.{module}"), name, None)


TrainLoraNode = _host_node("nodes_train", "TrainLoraNode")
ResolutionBucket = _host_node("nodes_dataset", "ResolutionBucket")
needs_trainer = pytest.mark.skipif(TrainLoraNode is None, reason="this host has no TrainLoraNode")


@pytest.fixture(scope="module")
def vae():
    return small_vae()


@pytest.fixture(scope="module")
def trained_codec(vae):
    """(encoder, decoder) for the small VAE, taught to carry alpha (about 15 s on 2 cores)."""
    with torch.inference_mode(False):
        return train_small_codec(vae, LAYOUT, steps=90, decoder=LAYOUT.decoder())


@pytest.fixture
def codec(layer_folder, trained_codec) -> str:
    info = CodecInfo("SD15", 4, 8, LAYOUT.offset_scale, True, decoder_channels=LAYOUT.decoder_channels)
    save_codec(str(layer_folder / CODEC), *trained_codec, info)
    return CODEC


@pytest.fixture(scope="module")
def model():
    return loader_model("SD15")


@pytest.fixture
def shapes(tmp_path):
    """4 transparent shapes (3 captioned), an opaque one and one without alpha."""
    folder = write_rgba_folder(tmp_path / "shapes", 4, SIZE, seed=7, opaque=1, without_alpha=1)
    for index in range(3):
        (folder / f"shape_{index:03d}.txt").write_text(f"shape number {index}", encoding="utf-8")
    return folder


def _train_lora(model, latents: list, conditioning: list, **settings):
    """The host's Train LoRA as the executor calls it (every input a list), for two steps on the CPU."""
    schema = TrainLoraNode.define_schema()
    values = {i.id: getattr(i, "default", None) for i in schema.inputs}
    values.update(steps=2, batch_size=2, rank=2, training_dtype="fp32", lora_dtype="fp32",
                  gradient_checkpointing=False, seed=0, **settings)
    values.update(model=model, latents=None, positive=None)
    listed = {name: [value] for name, value in values.items()}
    listed.update(latents=latents, positive=conditioning)
    outputs = dict(zip([o.display_name for o in schema.outputs], TrainLoraNode.execute(**listed), strict=True))
    lora, losses = outputs["lora"], outputs["loss_map"]  # 0.3.75 returns the trained MODEL first
    assert lora and all(torch.isfinite(t).all() for t in lora.values()), "LoRA weights came out"
    assert len(losses["loss"]) == 2 and all(torch.isfinite(torch.tensor(losses["loss"]))), losses
    return lora


def test_the_dataset_decodes_back_to_its_alpha(shapes, codec, model, vae, clip):
    latents, conditioning, report = Dataset().make(str(shapes), model, vae, clip, codec, SIZE, "a shape")
    assert len(latents) == len(conditioning) == 4
    assert all(latent["samples"].shape == (1, 4, SIZE // 8, SIZE // 8) for latent in latents)
    assert "4 latents with the codec small_sd15_codec.safetensors" in report
    assert "4 transparent images; skipped 1 without an alpha channel, 1 fully opaque" in report
    assert "1 without a caption file (shape_003.png): captioned 'a shape', the default caption" in report
    assert torch.equal(conditioning[3][0][0], clip.encode_from_tokens_scheduled(clip.tokenize("a shape"))[0][0])

    samples = torch.cat([latent["samples"] for latent in latents])
    images = vae.decode(samples)
    rgba, _, _ = Decode().decode({"samples": samples}, images, "auto", "1", 8, model=model, codec=codec)
    alpha = torch.cat([load_training_image(str(shapes / f"shape_{i:03d}.png"), SIZE)[:, 3] for i in range(4)])
    error = (rgba[..., 3] - alpha).abs().mean().item()
    constant = (alpha - alpha.mean()).abs().mean().item()
    other, _, _ = Decode().decode({"samples": samples.roll(1, 0)}, images, "auto", "1", 8, model=model, codec=codec)
    other_error = (other[..., 3] - alpha).abs().mean().item()
    # Measured (2-core CPU, 0.33.0 and 0.3.75): about 0.10 against 0.39 for a constant guess and 0.32 for another
    # image's latent.
    print(f"alpha error {error:.3f}, a constant guess {constant:.3f}, another image's latent {other_error:.3f}")
    assert error < 0.5 * constant and other_error > 1.5 * error, (error, constant, other_error)


@needs_trainer
def test_the_dataset_trains_a_lora_with_the_hosts_trainer(shapes, codec, model, vae, clip):
    latents, conditioning, _ = Dataset().make(str(shapes), model, vae, clip, codec, SIZE, "a shape")
    _train_lora(model, latents, conditioning)


@pytest.fixture
def mixed_sizes(tmp_path, codec, model, vae, clip) -> tuple[list, list]:
    """The dataset of 2 images at 32 px and 2 at 48 px, each kept at its own size."""
    folder = write_rgba_folder(tmp_path / "mixed", 2, SIZE, seed=3)
    write_rgba_folder(tmp_path / "larger", 2, SIZE + 16, seed=4)
    for index, path in enumerate(sorted((tmp_path / "larger").iterdir())):
        path.rename(folder / f"large_{index}.png")
    latents, conditioning, _ = Dataset().make(str(folder), model, vae, clip, codec, 0, "")
    assert sorted(latent["samples"].shape[-1] for latent in latents) == [4, 4, 6, 6]
    return latents, conditioning


@needs_trainer
def test_images_of_their_own_sizes_train_one_at_a_time(mixed_sizes, model):
    _train_lora(model, *mixed_sizes)


@needs_trainer
@pytest.mark.skipif(ResolutionBucket is None, reason="this host has no Resolution Bucket node")
def test_images_of_their_own_sizes_train_by_resolution_bucket(mixed_sizes, model):
    buckets, bucket_conditioning = ResolutionBucket.execute(latents=mixed_sizes[0], conditioning=mixed_sizes[1])[:2]
    assert sorted(bucket["samples"].shape[0] for bucket in buckets) == [2, 2]
    _train_lora(model, buckets, bucket_conditioning, bucket_mode=True)


@pytest.mark.parametrize("family", sorted(FLUX_LATENT_FAMILIES))
def test_families_of_flux_latents_get_the_flux_codec_and_no_flux1_lora(layer_folder, family):
    model = weightless_model(family)
    latent, rgb = torch.zeros(1, 16, 4, 4), torch.zeros(1, 3, 32, 32)
    assert host.decode_codec("published", "auto", model, latent, rgb).base == "FLUX"
    assert host.encode_codec("published", "auto", model, small_flux_vae()).base == "FLUX"
    with pytest.raises(ValueError, match=rf"^The connected MODEL \({family}\) samples FLUX.1's latents but is not "
                                         r"FLUX.1, and the published transparency LoRA .* is for FLUX.1 only. Train "
                                         r"one for this model: Layer Diffuse RGBA Training Dataset"):
        Apply().apply(model, "auto", 1.0)
    assert list(layer_folder.iterdir()) == [], "refused before any file was read or downloaded"


def test_bad_inputs_are_refused_before_any_work(tmp_path, layer_folder, codec, model, vae, clip):
    empty = write_rgba_folder(tmp_path / "opaque", 0, SIZE, opaque=2, without_alpha=1)
    with pytest.raises(RGBADatasetError, match=r"holds no transparent image to train on \(0 transparent images; "
                                               r"skipped 1 without an alpha channel, 2 fully opaque\)"):
        Dataset().make(str(empty), model, vae, clip, codec, SIZE, "")
    shapes = write_rgba_folder(tmp_path / "shapes", 1, SIZE)
    with pytest.raises(ValueError, match=r"^The codec small_sd15_codec.safetensors was trained for SD1.5 latents, "
                                         r"but the connected MODEL \(ZImage\) samples FLUX.1 latents"):
        Dataset().make(str(shapes), weightless_model("ZImage"), vae, clip, codec, SIZE, "")
    with pytest.raises(ValueError, match=r"Transparent encoding for FLUX needs the FLUX.1 VAE"):
        Dataset().make(str(shapes), weightless_model("ZImage"), vae, clip, "published", SIZE, "")
    with pytest.raises(ValueError, match=r"SD3/3.5 latents, and no published transparency codec exists .* Layer "
                                         r"Diffuse Train Transparent VAE.* `python -m layer_model.train_codec`"):
        Dataset().make(str(shapes), tiny_sd3(), vae, clip, "published", SIZE, "")
    with pytest.raises(ValueError, match="multiple of 16 px"):
        Dataset().make(str(shapes), model, vae, clip, codec, 40, "")
    assert not any(str(layer_folder) in key[0] for key in host._loaded), "no codec weight was loaded"
