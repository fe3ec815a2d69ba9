"""The one module of `layer_model` that touches ComfyUI: model folders, model management, VAE access.

Everything else in the package is plain torch and can be read and tested without the host.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import comfy.model_management as mm
import comfy.model_patcher
import comfy.utils
import folder_paths
import torch

from . import weights
from ._common import families
from ._common import host as common_host
from .decode_precision import CodecSetup, DeviceTraits, apply_setup, codec_setup, cpu_has_native_bf16
from .host_vae import HostVAE, candidate_spaces, place_vae
from .latent_spaces import FLUX, SD15, SDXL, LatentSpace
from .pickled_codec import convert_pickled_codec
from .transparent_codec import (
    CODECS,
    CodecLayout,
    decode_rgba,
    encode_offset,
    encoder_inputs,
    narrowed_channels,
    offset_latent,
)

BASE_CHOICES = families.FAMILIES  # LayerDiffusion has weights for each family the pack knows
SPACE_OF_FAMILY = {families.SD15: SD15, families.SDXL: SDXL, families.FLUX: FLUX}


def register_model_folder() -> None:
    """Make `models/layer_model` a host model folder; `extra_model_paths.yaml` may add more."""
    common_host.register_model_folder(weights.FOLDER_NAME, {".safetensors"})


def layer_model_folders() -> list[str]:
    return folder_paths.get_folder_paths(weights.FOLDER_NAME)


def base_from_model(model) -> str:
    """SDXL, SD1.5 or FLUX, read from the MODEL's own latent space; other families are refused clearly."""
    return common_host.model_family(model, BASE_CHOICES, (
        "The connected MODEL ({model}) is not SD1.5, SDXL or FLUX.1; LayerDiffusion only has weights for those "
        "(FLUX.2, SD3 and others use another latent space). Load an SD1.5, SDXL or FLUX.1 model."))


def resolve_base(sd_version: str, model=None, latent_channels: int | None = None, check: bool = True) -> str:
    """The base whose transparent VAE to use: as chosen, or for 'auto' from the MODEL or a FLUX-sized latent.

    `latent_channels` (of the LATENT to decode, or of the VAE to encode with) is checked against the base
    before any weight is loaded, unless `check` is off.
    """
    if sd_version != families.AUTO:
        if sd_version not in BASE_CHOICES:
            raise ValueError(f"sd_version must be one of {(families.AUTO,) + BASE_CHOICES}, got {sd_version!r}")
        base = sd_version
    elif model is not None:
        base = base_from_model(model)
    elif latent_channels == CODECS[weights.FLUX].latent_channels:
        base = weights.FLUX
    else:
        raise ValueError("sd_version is 'auto' but no MODEL is connected: connect the MODEL input, "
                         "or choose SDXL, SD1.5 or FLUX.")
    if check and latent_channels is not None:
        check_latent_channels(latent_channels, base)
    return base


def check_latent_channels(channels: int, base: str) -> None:
    """Refuse a latent of another family before any weight is loaded."""
    expected = CODECS[base].latent_channels
    if channels != expected:
        family = {4: "an SD1.5/SDXL", 16: "a FLUX.1 (or SD3)"}.get(channels, "another model's")
        raise ValueError(f"The latent has {channels} channels ({family} latent), but {base} latents have "
                         f"{expected}. Set sd_version to the model that made the latent, or 'auto' with its MODEL "
                         "connected.")


def download_progress() -> Callable[[int, int | None], None]:
    """A host progress bar that appears once the download size is known."""
    bar: list[comfy.utils.ProgressBar] = []

    def update(done: int, total: int | None) -> None:
        mm.throw_exception_if_processing_interrupted()  # Cancel in the UI stops a long download
        if total:
            if not bar:
                bar.append(comfy.utils.ProgressBar(total))
            bar[0].update_absolute(done, total)
    return update


def _folders_of(names: tuple[str, ...]) -> list[str]:
    return [path for name in names if name in folder_paths.folder_names_and_paths
            for path in folder_paths.get_folder_paths(name)]


def ensure_weight(weight: weights.WeightFile) -> str:
    """Path of a published file in the layer_model folders, downloaded with a host progress bar if missing.

    Files that guides elsewhere put into other model folders (the FLUX port's LoRA in `loras`, its pickle
    in `vae`) are taken from there too; a pickle is converted once to safetensors in a layer_model folder.
    """
    names = weight.also_in + (weights.REGISTRY[weight.source].also_in if weight.source else ())
    return weights.ensure(weight, layer_model_folders(), download_progress(), convert_pickled_codec,
                          _folders_of(names))


_loaded: dict[tuple, comfy.model_patcher.ModelPatcher] = {}


def device_traits(device: torch.device) -> DeviceTraits:
    """What the codec set-up depends on, read from the host for `device`."""
    bf16 = device.type == "cpu" or (device.type == "cuda" and torch.cuda.is_bf16_supported()) \
        or mm.should_use_bf16(device)
    return DeviceTraits(kind=device.type, fp16_fast=mm.should_use_fp16(device), bf16_supported=bf16,
                        bf16_native=bf16 and _bf16_native(device))


def _bf16_native(device: torch.device) -> bool:
    """bf16 in hardware: a CPU with bf16 instructions, an NVIDIA GPU from Ampere (8.0) on; other devices that
    run bf16 at all are taken at their word."""
    if device.type == "cpu":
        return cpu_has_native_bf16()
    if device.type == "cuda" and torch.version.hip is None:
        return torch.cuda.get_device_capability(device)[0] >= 8
    return True


def load_codec(kind: str, base: str, setup: CodecSetup | None = None) -> comfy.model_patcher.ModelPatcher:
    """The transparent decoder or encoder for `base`, wrapped for host model management.

    Downloads the file if it is missing. The host moves the module between devices (call
    `mm.load_models_gpu([patcher])` before use). Its number format and layout follow `setup`
    (`decode_precision.codec_setup`); by default, `auto` on the load device.
    """
    load_device = mm.get_torch_device()
    setup = setup or codec_setup(families.AUTO, device_traits(load_device))
    weight, prefix = weights.codec_file(base, kind)
    path = ensure_weight(weight)
    stat = os.stat(path)
    key = (path, kind, stat.st_mtime_ns, stat.st_size, setup)
    if key not in _loaded:
        for old in [k for k in _loaded if k[:2] == (path, kind)]:
            del _loaded[old]  # one copy per file in memory: the file changed, or another set-up was asked for
        module = apply_setup(_build(kind, base, weight, path, prefix), setup)
        _loaded[key] = comfy.model_patcher.ModelPatcher(
            module, load_device=load_device, offload_device=mm.vae_offload_device()
        )
    return _loaded[key]


def _build(kind: str, base: str, weight: weights.WeightFile, path: str, prefix: str) -> torch.nn.Module:
    layout = CODECS[base]
    module = layout.decoder() if kind == "decoder" else layout.encoder()
    state = weights.load_state_dict(path)
    if prefix:
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    load_strict(module, state, path, weight)
    return module.eval().requires_grad_(False)


def load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], path: str,
                weight: weights.WeightFile) -> None:
    """Load a published file into `module`, key for key and shape for shape, or say what is wrong."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or wrong_shape:
        raise weights.WeightFileError(
            f"{path} does not hold {weight.description} ({len(missing)} tensors missing, "
            f"{len(unexpected)} unexpected, {len(wrong_shape)} of the wrong shape; e.g. "
            f"{(missing + unexpected + wrong_shape)[:3]}). Expected the published {weight.name}; "
            "replace the file with that one."
        )
    module.load_state_dict(state, strict=True)


def prepare(patcher: comfy.model_patcher.ModelPatcher, working_memory: int = 0) -> torch.nn.Module:
    """Load the wrapped module onto the compute device through the host and return it.

    `working_memory` (bytes) asks the host to free that much beside the weights, for activations.
    """
    mm.load_models_gpu([patcher], memory_required=working_memory, force_full_load=True)
    return patcher.model


# Peak activation memory of one decoder pass per padded pixel in fp32 (bench/decode.py measures
# about 620-740 bytes at 512-1024 px on the CPU); with a margin.
DECODER_BYTES_PER_PIXEL_FP32 = 900


def decoder_pass_bytes(patcher: comfy.model_patcher.ModelPatcher, height: int, width: int) -> int:
    module = patcher.model
    multiple = module.config.pad_multiple
    padded = (-(-height // multiple) * multiple) * (-(-width // multiple) * multiple)
    dtype_size = next(module.parameters()).element_size()
    return DECODER_BYTES_PER_PIXEL_FP32 * padded * dtype_size // 4


def decoder_passes_that_fit(patcher: comfy.model_patcher.ModelPatcher, height: int, width: int,
                            batch_passes: bool = True) -> int:
    """How many decoder passes to run at once: what fits in free memory, or 1 where batching does not pay.

    On a CPU the convolutions already keep every core busy: batching 8 passes measured 2-34% slower
    than one at a time (bench/decode.py, 512-1024 px) for 4x the memory.
    """
    if not batch_passes:
        return 1
    free = mm.get_free_memory(patcher.load_device)
    return max(1, int(0.8 * free) // decoder_pass_bytes(patcher, height, width))


def check_vae(vae, base: str) -> None:
    autoencoder = getattr(vae, "first_stage_model", None)
    channels = CODECS[base].latent_channels
    if not hasattr(autoencoder, "encoder") or getattr(vae, "latent_channels", None) != channels:
        wanted = "the FLUX.1 VAE (ae.safetensors, 16" if base == weights.FLUX else "the SD1.5 or SDXL VAE (4"
        raise ValueError(f"Transparent encoding for {base} needs {wanted} latent channels); the connected VAE is a "
                         f"{type(autoencoder).__name__} with {getattr(vae, 'latent_channels', '?')} latent channels. "
                         "Connect the VAE of the model you sample with, and set sd_version to match.")


def crop_for_vae(vae, rgb: torch.Tensor, alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """RGB [B,H,W,3] and alpha [B,H,W,1] cropped as the host crops pixels for this VAE (sides to multiples of 8).

    Each goes through the host on its own: since ComfyUI 0.30 `vae_encode_crop_pixels` also cuts the
    channels down to the VAE's three, which would drop an alpha channel sent along with the RGB.
    """
    alpha = vae.vae_encode_crop_pixels(alpha.expand(*alpha.shape[:-1], 3))[..., :1]
    return vae.vae_encode_crop_pixels(rgb), alpha


def vae_posterior(vae, pixels: torch.Tensor, sub_batch_size: int = 4,
                  space: LatentSpace | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation of the host VAE's latent posterior for [B,H,W,3] pixels in [0,1], on the
    host's intermediate device: `HostVAE.posterior`, a sub-batch at a time.

    The host's `VAE.encode` returns only the mean; the transparency offset is measured in posterior std units.
    `space` defaults to the VAE's structure (spaces it cannot tell apart are encoded alike).
    """
    reader = HostVAE(vae, space or candidate_spaces(vae)[0])
    rgb, device = pixels.movedim(-1, 1), mm.intermediate_device()
    parts = [reader.posterior(rgb[start:start + sub_batch_size]) for start in range(0, rgb.shape[0], sub_batch_size)]
    return torch.cat([mean for mean, _ in parts]).to(device), torch.cat([std for _, std in parts]).to(device)


def decode_rgba_batch(latent: torch.Tensor, rgb: torch.Tensor, base: str, augmentations: int, sub_batch_size: int,
                      precision: str = families.AUTO, traits: DeviceTraits | None = None) -> torch.Tensor:
    """RGBA [B,4,H,W] from latents and their VAE-decoded RGB [B,3,H,W], run the host's way.

    The decoder is loaded through model management with room for its activations, shows a host
    progress bar, and on running out of memory retries with fewer passes at once, as VAE Decode does.
    `traits` makes the set-up choices of another kind of device (tests run the GPU path on a CPU).
    """
    setup = codec_setup(precision, traits or device_traits(mm.get_torch_device()))
    patcher = load_codec("decoder", base, setup)
    height, width = rgb.shape[-2:]
    passes = min(sub_batch_size, rgb.shape[0] * augmentations)
    while True:
        decoder = prepare(patcher, working_memory=passes * decoder_pass_bytes(patcher, height, width))
        passes = min(passes, decoder_passes_that_fit(patcher, height, width, setup.batch_passes))
        bar = comfy.utils.ProgressBar(rgb.shape[0] * augmentations)
        try:
            return decode_rgba(decoder, rgb, latent.float(), augmentations, passes, progress=bar.update)
        except mm.OOM_EXCEPTION:
            if passes == 1:
                raise
            passes //= 2
            logging.warning("Transparent decode ran out of memory; retrying with %d passes at once", passes)
            mm.soft_empty_cache()


def encode_rgba(vae, rgb: torch.Tensor, alpha: torch.Tensor, base: str) -> torch.Tensor:
    """The transparent latent for straight RGB [B,3,H,W] and alpha [B,1,H,W] (sides multiples of 8)."""
    check_vae(vae, base)
    layout = CODECS[base]
    vae_rgb, encoder_input = encoder_inputs(rgb.float(), alpha.float(), layout)
    offset = encode_offset(prepare(load_codec("encoder", base)), encoder_input)
    mean, std = vae_posterior(vae, vae_rgb.movedim(1, -1), space=place_vae(vae, SPACE_OF_FAMILY[base].name))
    return offset_latent(mean, std, offset, layout.offset_scale)


# The latent spaces (the host's latent format names) that have a published codec to fine-tune from.
PUBLISHED_CODEC_OF_SPACE = {"SD15": families.SD15, "SDXL": families.SDXL, "Flux": families.FLUX}


def codec_start(space_name: str, space_label: str, channels: int, downscale: int, init: str,
                decoder_width: float = 1.0) -> tuple[CodecLayout, tuple[dict, dict] | None]:
    """The layout a codec trainer starts from and, to fine-tune (`init` "published"), the published codec's
    (encoder, decoder) state dicts for that latent space, downloaded if missing."""
    if init != "published":
        return CodecLayout(channels, True, 0.0, downscale, narrowed_channels(decoder_width)), None
    base = PUBLISHED_CODEC_OF_SPACE.get(space_name)
    if base is None:
        raise ValueError(f"No published transparency codec exists for {space_label} latents to fine-tune from: "
                         "set init to 'none' to train one from scratch.")
    if decoder_width != 1.0:
        raise ValueError("A codec fine-tuned from the published one keeps its decoder width: set the decoder "
                         "width to 1.0, or init to 'none'.")
    states = []
    for kind in ("encoder", "decoder"):
        weight, prefix = weights.codec_file(base, kind)
        state = weights.load_state_dict(ensure_weight(weight))
        states.append({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)} if prefix else state)
    return CODECS[base], (states[0], states[1])


def codec_output_path(file_name: str) -> str:
    """models/layer_model/<file_name>.safetensors (the first layer_model folder), refusing names with folders."""
    name = file_name.strip()
    if not name or os.path.basename(name) != name or name.startswith("."):
        raise ValueError(f"The save name {file_name!r} must be a plain file name (no folders), e.g. 'my_codec'.")
    if not name.endswith(".safetensors"):
        name += ".safetensors"
    folder = layer_model_folders()[0]
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, name)
