"""The one module of `layer_model` that touches ComfyUI: model folders, model management, VAE access.

Everything else in the package is plain torch and can be read and tested without the host.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import comfy.latent_formats
import comfy.model_management as mm
import comfy.model_patcher
import comfy.supported_models
import comfy.utils
import folder_paths
import torch

from . import trained_codec, weights
from ._common import families
from ._common import host as common_host
from .codec_choice import (
    FAMILY_OF_SPACE,
    PUBLISHED,
    PUBLISHED_SETS,
    Codec,
    check_latent_frames,
    check_published_latent,
    choose_codec,
    latent_candidates,
)
from .decode_precision import CodecSetup, DeviceTraits, apply_setup, codec_setup, cpu_has_native_bf16
from .host_vae import HostVAE, candidate_spaces, place_vae
from .latent_spaces import SPACES, LatentSpace
from .pickled_codec import convert_pickled_codec
from .transparent_codec import (
    CODECS,
    CodecLayout,
    check_latent_matches_image,
    decode_rgba,
    encode_offset,
    encoder_inputs,
    narrowed_channels,
    offset_latent,
)

BASE_CHOICES = families.FAMILIES  # LayerDiffusion has weights for each family the pack knows


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


def flux_architecture(model) -> str | None:
    """weights.FLUX (FLUX.1) or weights.FLUX2 for the host's FLUX transformers, read from the model's config class
    (FLUX.2's subclasses FLUX.1's); None for any other, including Z-Image, Lumina 2 and HiDream, which sample
    FLUX.1's latents with transformers of their own."""
    config = model.model.model_config
    if isinstance(config, comfy.supported_models.Flux2):
        return weights.FLUX2
    return weights.FLUX if isinstance(config, comfy.supported_models.Flux) else None


def check_latent_channels(channels: int, base: str) -> None:
    """Refuse a latent of another family before any weight is loaded."""
    expected = CODECS[base].latent_channels
    if channels != expected:
        family = {4: "an SD1.5/SDXL", 16: "a FLUX.1 (or SD3)"}.get(channels, "another model's")
        raise ValueError(f"The latent has {channels} channels ({family} latent), but {base} latents have "
                         f"{expected}. Set sd_version to the model that made the latent, or 'auto' with its MODEL "
                         "connected.")


# --- Which codec: the published one of a family, or a trained file in the layer_model folders ----------------

_infos: dict[str, tuple[int, int, trained_codec.CodecInfo | None]] = {}  # path -> (mtime, size, its description)


def _codec_info(path: str) -> trained_codec.CodecInfo | None:
    """The file's codec description (None: none, or unreadable), read once per version of the file: the list is
    asked for at every editor refresh, and a header read is cheap but not free for large published files."""
    stat = os.stat(path)
    cached = _infos.get(path)
    if cached is None or cached[:2] != (stat.st_mtime_ns, stat.st_size):
        try:
            info = trained_codec.read_info(path)
        except Exception as err:  # a damaged or foreign file is not a codec to offer; say why once per version
            logging.warning("Layer Diffuse: %s is not listed as a codec: %s", path, err)
            info = None
        cached = _infos[path] = (stat.st_mtime_ns, stat.st_size, info)
    return cached[2]


def trained_codec_names() -> list[str]:
    """The trained codec files in the layer_model folders (those whose header describes a codec), as the host
    lists them; published weights and other files are left out."""
    names = []
    for name in folder_paths.get_filename_list(weights.FOLDER_NAME):
        path = folder_paths.get_full_path(weights.FOLDER_NAME, name)
        if path is not None and _codec_info(path) is not None:
            names.append(name)
    return names


def codec_choices() -> list[str]:
    """The codec combo: 'published' first (the default), the further published sets, then the trained files."""
    return [PUBLISHED, *PUBLISHED_SETS, *trained_codec_names()]


def trained_codec_named(name: str) -> Codec:
    """The trained codec `name` (as listed by `trained_codec_names`), described from its header."""
    path = folder_paths.get_full_path(weights.FOLDER_NAME, name)
    if path is None:
        raise ValueError(f"The codec file {name} is not in the layer_model folders ({', '.join(layer_model_folders())})"
                         ". Choose a file the codec list offers (refresh the editor after adding one), or 'published'.")
    info = _codec_info(path)
    if info is None:
        raise ValueError(f"{name} is not a trained transparency codec (its header has no codec description): choose "
                         "a file saved by Layer Diffuse Train Transparent VAE, or 'published'.")
    return Codec.trained(name, path, info)


# (family, weight set) on a MODEL clone patched with a published set other than a family's first (the SDXL
# diffusers set): the latents it makes need that set's codec, which 'published' then means.
WEIGHT_SET_OPTION = "layer_sketch_weight_set"


def _chosen(codec: str, model=None) -> Codec | None:
    """None for 'published' (the family's first set, chosen later from the latents in use) unless the MODEL carries
    another published set's weights, then that set's codec; else the named codec."""
    if codec == PUBLISHED:
        carried = model.model_options.get(WEIGHT_SET_OPTION) if model is not None else None
        return Codec.published(*carried) if carried else None
    if codec in PUBLISHED_SETS:
        return Codec.published(*PUBLISHED_SETS[codec])
    return trained_codec_named(codec)


# The host's latent format classes of the spaces a codec exists or can be trained for, matched exactly: Flux
# subclasses SD3 and Wan22 (48 channels at 1/16) subclasses Wan21, yet each is another space.
_SPACE_OF_FORMAT = {getattr(comfy.latent_formats, name): space for name, space in SPACES.items()}


def model_space(model) -> LatentSpace:
    """The latent space the MODEL samples in, from its latent format (Z-Image: Flux; Qwen-Image: Wan21)."""
    latent_format = type(model.model.latent_format)
    space = _SPACE_OF_FORMAT.get(latent_format)
    if space is None:
        raise ValueError(f"The connected MODEL ({_model_name(model)}) samples {latent_format.__name__} latents; "
                         "transparency codecs exist or can be trained only for "
                         f"{', '.join(s.label for s in SPACES.values())} latents. Connect one of those models.")
    return space


def _model_name(model) -> str:
    return type(model.model.model_config).__name__


def _model_in_use(model, trained: Codec | None, sd_version: str) -> tuple[LatentSpace | None, str]:
    """(the MODEL's latent space, its config class name) where the choice reads the MODEL: for a trained codec
    and for 'auto'. A published codec chosen by sd_version ignores the MODEL, as it always has (a model of a
    format the pack does not know, sampling in the chosen family's space, keeps working)."""
    if model is None or (trained is None and sd_version != families.AUTO):
        return None, ""
    return model_space(model), _model_name(model)


def decode_codec(codec: str, sd_version: str, model, latent: torch.Tensor, rgb: torch.Tensor) -> Codec:
    """The codec that decodes `latent` (the LATENT's samples) and its VAE-decoded RGB [B,3,H,W], with every check
    that can be made before a weight loads: the codec against the MODEL, sd_version and the latent's shape, the
    latent against the image."""
    check_latent_frames(latent.shape)
    trained = _chosen(codec, model)
    space, name = _model_in_use(model, trained, sd_version)
    chosen = choose_codec(trained, sd_version, space, name, lambda: latent_candidates(latent.shape), latent.shape)
    if chosen.base:
        check_latent_channels(latent.shape[1], chosen.base)
        check_published_latent(chosen, latent.shape)
    check_latent_matches_image(rgb, _image_latent(latent), chosen.layout.downscale)
    return chosen


def encode_codec(codec: str, sd_version: str, model, vae) -> Codec:
    """The codec that encodes for `vae`, checked against the MODEL, sd_version and the VAE before a weight loads."""
    trained = _chosen(codec, model)
    space, name = _model_in_use(model, trained, sd_version)
    # A trained codec needs a VAE of its space (other VAEs are refused naming the spaces); the published choice
    # reads the VAE only for 'auto' without a MODEL, and check_vae then says what it needs.
    data = (lambda: candidate_spaces(vae)) if trained is not None else (lambda: _spaces_or_none(vae))
    chosen = choose_codec(trained, sd_version, space, name, data)
    if chosen.base:
        check_vae(vae, chosen.base)
    return chosen


def _spaces_or_none(vae) -> tuple[LatentSpace, ...]:
    try:
        return candidate_spaces(vae)
    except ValueError:
        return ()


def _image_latent(latent: torch.Tensor) -> torch.Tensor:
    """[B,C,h,w]: a one-frame latent of a video VAE (Qwen-Image's) without its frame axis."""
    return latent[:, :, 0] if latent.ndim == 5 else latent


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


def load_codec(kind: str, codec: Codec | str, setup: CodecSetup | None = None) -> comfy.model_patcher.ModelPatcher:
    """The transparent decoder or encoder of `codec` (a published base such as "SD1.5", or a `Codec`), wrapped for
    host model management.

    Downloads a missing published file. The host moves the module between devices (call
    `mm.load_models_gpu([patcher])` before use). Its number format and layout follow `setup`
    (`decode_precision.codec_setup`); by default, `auto` on the load device. One copy per file and kind is kept.
    """
    codec = Codec.published(codec) if isinstance(codec, str) else codec
    load_device = mm.get_torch_device()
    setup = setup or codec_setup(families.AUTO, device_traits(load_device))
    weight, prefix = weights.codec_file(codec.base, kind, codec.weight_set) if codec.base else (None, "")
    path = ensure_weight(weight) if weight is not None else codec.path
    stat = os.stat(path)
    key = (path, kind, stat.st_mtime_ns, stat.st_size, setup)
    if key not in _loaded:
        for old in [k for k in _loaded if k[:2] == (path, kind)]:
            del _loaded[old]  # one copy per file in memory: the file changed, or another set-up was asked for
        module = apply_setup(_build(kind, codec, weight, path, prefix), setup)
        _loaded[key] = comfy.model_patcher.ModelPatcher(
            module, load_device=load_device, offload_device=mm.vae_offload_device()
        )
    return _loaded[key]


def _build(kind: str, codec: Codec, weight: weights.WeightFile | None, path: str, prefix: str) -> torch.nn.Module:
    module = codec.layout.decoder() if kind == "decoder" else codec.layout.encoder()
    if weight is None:  # a trained file: its header described the layout just built
        state = trained_codec.load_part(path, kind)
        problem = _state_problem(module, state)
        if problem:
            raise weights.WeightFileError(f"{path} does not hold the {kind} its header describes ({problem}). The "
                                          "file is damaged or was changed after training: train the codec again.")
        module.load_state_dict(state, strict=True)
    else:
        state = weights.load_state_dict(path)
        if prefix:
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        load_strict(module, state, path, weight)
    return module.eval().requires_grad_(False)


def _state_problem(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> str | None:
    return state_mismatch(module.state_dict(), state)


def state_mismatch(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor],
                   optional_suffixes: tuple[str, ...] = ()) -> str | None:
    """What keeps `state` from filling `expected` key for key and shape for shape, or None (keys ending in one of
    `optional_suffixes` may be left out)."""
    missing = sorted(k for k in set(expected) - set(state) if not k.endswith(optional_suffixes))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if not (missing or unexpected or wrong_shape):
        return None
    return (f"{len(missing)} tensors missing, {len(unexpected)} unexpected, {len(wrong_shape)} of the wrong shape; "
            f"e.g. {(missing + unexpected + wrong_shape)[:3]}")


def chosen_file(name: str, published: dict, folder: str, error: type[Exception] = ValueError) -> str:
    """The file behind a loader's choice: a published one (found in the model folders or downloaded), else the
    file of that name in the host's `folder` folders."""
    if name in published:
        return ensure_weight(weights.REGISTRY[name])
    path = folder_paths.get_full_path(folder, name)
    if path is None:
        raise error(f"{name} is not in the {folder} folders ({', '.join(folder_paths.get_folder_paths(folder))}). "
                    "Choose a file the list offers (refresh the editor after adding one).")
    return path


def load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], path: str,
                weight: weights.WeightFile) -> None:
    """Load a published file into `module`, key for key and shape for shape, or say what is wrong."""
    problem = _state_problem(module, state)
    if problem:
        raise weights.WeightFileError(f"{path} does not hold {weight.description} ({problem}). Expected the "
                                      f"published {weight.name}; replace the file with that one.")
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
    """RGB [B,H,W,3] and alpha [B,H,W,1] cropped as the host crops pixels for this VAE (sides to multiples of its
    downscale: 8, FLUX.2's 16).

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


def decode_rgba_batch(latent: torch.Tensor, rgb: torch.Tensor, codec: Codec | str, augmentations: int,
                      sub_batch_size: int, precision: str = families.AUTO,
                      traits: DeviceTraits | None = None) -> torch.Tensor:
    """RGBA [B,4,H,W] from latents (the LATENT's samples; a one-frame 5-D latent too) and their VAE-decoded RGB
    [B,3,H,W] with `codec` (a published base such as "SD1.5", or a `Codec`), run the host's way.

    The decoder is loaded through model management with room for its activations, shows a host
    progress bar, and on running out of memory retries with fewer passes at once, as VAE Decode does.
    `traits` makes the set-up choices of another kind of device (tests run the GPU path on a CPU).
    """
    setup = codec_setup(precision, traits or device_traits(mm.get_torch_device()))
    patcher = load_codec("decoder", codec, setup)
    latent = _image_latent(latent)
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


def encode_rgba(vae, rgb: torch.Tensor, alpha: torch.Tensor, codec: Codec | str) -> torch.Tensor:
    """The transparent latent for straight RGB [B,3,H,W] and alpha [B,1,H,W] (sides multiples of the VAE's
    downscale) with `codec` (a published base such as "SD1.5", or a `Codec`), shaped as VAE Encode's samples
    (Qwen-Image's: [B,C,1,h,w]). The offset is in posterior std units times the codec's offset scale."""
    codec = Codec.published(codec) if isinstance(codec, str) else codec
    if codec.base:
        check_vae(vae, codec.base)
    vae_rgb, encoder_input = encoder_inputs(rgb.float(), alpha.float(), codec.layout)
    offset = encode_offset(prepare(load_codec("encoder", codec)), encoder_input)
    space = place_vae(vae, codec.space.name)
    mean, std = vae_posterior(vae, vae_rgb.movedim(1, -1), space=space)
    latent = offset_latent(mean, std, offset, codec.layout.offset_scale)
    return latent.unsqueeze(2) if space.frames else latent


def encode_transparent(vae, rgb: torch.Tensor, alpha: torch.Tensor, codec: Codec) -> torch.Tensor:
    """Layer Diffuse Encode's latent for straight RGB [B,H,W,3] and alpha [B,H,W,1] (IMAGE layout): cropped as
    the host crops pixels for this VAE, then `encode_rgba`."""
    rgb, alpha = crop_for_vae(vae, rgb, alpha)
    return encode_rgba(vae, rgb.movedim(-1, 1), alpha.movedim(-1, 1), codec)


# The latent spaces (the host's latent format names) that have a published codec to fine-tune from.
PUBLISHED_CODEC_OF_SPACE = FAMILY_OF_SPACE


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
