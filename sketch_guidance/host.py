"""Host side of sketch guidance: the only module of this package that imports ComfyUI.

Guidance lives on a MODEL clone: an APPLY_MODEL wrapper runs the UNet call of a guided step with
gradients on (outside the host's inference mode, with the weights seen as normal tensors, not copied),
captures the chosen layers for the conditional rows, and records dL/dx; a post-CFG function then
moves the sampler's denoised estimate so that its step carries the guidance (see guidance.py).
"""

from __future__ import annotations

import logging
import os
from functools import partial

import comfy.ldm.modules.attention as host_attention
import comfy.model_management as mm
import comfy.model_patcher
import comfy.patcher_extension
import comfy.samplers
import folder_paths
import torch

from . import edges
from ._common import families, inference_tensors
from ._common import host as common_host
from .features import Layer, capture, feature_channels
from .guidance import (
    GuidanceState,
    check_strength,
    edge_loss,
    guided_denoised,
    noise_level,
    snapshots_of_outputs,
)
from .predictor import EdgePredictor, PredictorFileError, import_community_checkpoint, load_predictor, save_predictor

FOLDER_NAME = "edge_predictor"
EXTENSIONS = {".safetensors", ".pt", ".pth"}
COND = 0  # the host's mark for conditional rows in transformer_options["cond_or_uncond"]
WRAPPER_KEY = "layer_sketch_guidance"
ModelPatcher = comfy.model_patcher.ModelPatcher


BASES = (families.SD15, families.SDXL)  # UNet models: edge predictors read a UNet's features


def register_model_folder() -> None:
    """Make `models/edge_predictor` a host model folder; `extra_model_paths.yaml` may add more."""
    common_host.register_model_folder(FOLDER_NAME, EXTENSIONS)


def base_of(model: ModelPatcher) -> str:
    """SD1.5 or SDXL from the MODEL's latent space; other families are refused."""
    return common_host.model_family(model, BASES, (
        "Sketch guidance supports SD1.5 and SDXL models; the connected MODEL is {model}. Its edge predictors read "
        "a UNet's features, which FLUX and other transformer models do not have: sample the sketch-guided image "
        "with an SD1.5 or SDXL checkpoint (a ControlNet of your model's family can follow lines too)."))


def predictor_names() -> list[str]:
    """The files listed in the edge_predictor folders."""
    return folder_paths.get_filename_list(FOLDER_NAME)


def predictor_output_path(file_name: str) -> str:
    """Where Train Predictor saves `file_name`: models/edge_predictor/<file_name>.safetensors (folder made)."""
    name = os.path.basename(file_name.strip())
    if not name or name != file_name.strip():
        raise ValueError(f"file_name {file_name!r} must be a plain file name (no folders), e.g. my_edge_predictor")
    if not name.endswith(".safetensors"):
        name += ".safetensors"
    folder = folder_paths.get_folder_paths(FOLDER_NAME)[0]
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, name)


def predictor_path(name: str) -> str:
    """The file for a name listed in the edge_predictor folders; a community .pt is converted once."""
    path = folder_paths.get_full_path_or_raise(FOLDER_NAME, name)
    if not path.endswith((".pt", ".pth")):
        return path
    converted = os.path.splitext(path)[0] + ".safetensors"
    if not os.path.exists(converted):
        save_predictor(import_community_checkpoint(path), converted)
        logging.info("Converted the community edge predictor %s to %s", path, converted)
    return converted


def load_predictor_model(name: str) -> ModelPatcher:
    """An EDGE_PREDICTOR: the predictor wrapped for host model management."""
    with torch.inference_mode(False):
        predictor = load_predictor(predictor_path(name))
    return ModelPatcher(predictor, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device())


def check_fits(predictor: EdgePredictor, model: ModelPatcher) -> None:
    """Refuse, before sampling, a predictor made for another base model or for other layers."""
    info, base = predictor.info, base_of(model)
    if info.base != base:
        raise PredictorFileError(f"This edge predictor was trained for {info.base} models, but the connected "
                                 f"MODEL is {base}. Load a predictor trained for {base}, or train one with "
                                 "Sketch Guidance Train Predictor.")
    channels = feature_channels(model.model.diffusion_model, info.layers)
    if channels != info.feature_channels:
        raise PredictorFileError(f"This edge predictor reads {info.feature_channels} feature channels from its "
                                 f"'{info.layer_set}' layers, but this model's UNet has {channels} there: it was "
                                 "trained for a model of another shape. Train one for this model.")


def sketch_target(vae, model: ModelPatcher, sketch: torch.Tensor) -> torch.Tensor:
    """The VAE-encoded edge map of a sketch IMAGE [B,H,W,C], in the model's latent space: [B,4,H/8,W/8]."""
    strokes = edges.sketch_edges(sketch.movedim(-1, 1))
    height, width = (max(8, round(s / 8) * 8) for s in strokes.shape[-2:])
    rgb = edges.as_rgb(edges.resize(strokes, height, width))
    return encode_pixels(vae, model, rgb)


def encode_pixels(vae, model: ModelPatcher, pixels: torch.Tensor) -> torch.Tensor:
    """[B,3,H,W] in [0,1] -> the model-space latent (what the UNet sees before noise)."""
    latent = vae.encode(pixels.movedim(1, -1))
    return model.model.latent_format.process_in(latent.float())


def apply_guidance(model: ModelPatcher, predictor: ModelPatcher, target: torch.Tensor, strength: float,
                   end_percent: float) -> ModelPatcher:
    """A clone of `model` that steers sampling toward `target` for the first `end_percent` of sampling."""
    check_strength(strength)
    if not 0.0 <= end_percent <= 1.0:
        raise ValueError(f"end_percent must be between 0 and 1, got {end_percent}")
    check_fits(predictor.model, model)
    patched = model.clone()
    if strength == 0.0 or end_percent == 0.0:
        return patched  # nothing to do: sampling stays bit-identical to the unpatched model
    sampling = model.get_model_object("model_sampling")
    state = GuidanceState(strength, sigma_end=float(sampling.percent_to_sigma(end_percent)))
    guided_call = partial(_guided_apply_model, state, model.model.diffusion_model, predictor, target.detach())
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, WRAPPER_KEY, guided_call)
    step = partial(_guidance_step, state)
    patched.set_model_sampler_post_cfg_function(step)
    # First among the post-CFG functions: the step takes its gradient before others (PAG, SAG) call the model
    # again at the same sigma, and those calls are not guided (they would add a second gradient).
    others = [f for f in patched.model_options["sampler_post_cfg_function"] if f is not step]
    patched.model_options["sampler_post_cfg_function"] = [step, *others]
    patched.set_additional_models(WRAPPER_KEY, [predictor])  # loaded and offloaded with the UNet
    return patched


def _conditional_rows(options: dict, rows: int) -> tuple[torch.Tensor, int]:
    marks = options.get("cond_or_uncond") or [COND]
    chunk = rows // len(marks)
    indices = [i * chunk + j for i, mark in enumerate(marks) if mark == COND for j in range(chunk)]
    return torch.tensor(indices, dtype=torch.long), chunk


def _target_for(state: GuidanceState, target: torch.Tensor, samples: torch.Tensor, batch: int,
                like: torch.Tensor) -> torch.Tensor:
    """The sketch latent for each guided sample, on the latent grid being generated."""
    if target.shape[0] not in (1, batch):
        raise ValueError(f"The sketch batch has {target.shape[0]} images but {batch} latents are being generated: "
                         "give one sketch for all, or one per latent.")
    target = target.to(like)
    if target.shape[-2:] != like.shape[-2:]:
        if not state.resized:
            logging.warning("Sketch guidance: the sketch (%dx%d px) does not match the image being generated "
                            "(%dx%d px); it is resized to fit, which stretches it if the aspect ratios differ.",
                            target.shape[-1] * 8, target.shape[-2] * 8, like.shape[-1] * 8, like.shape[-2] * 8)
            state.resized = True
        target = torch.nn.functional.interpolate(target, size=like.shape[-2:], mode="bilinear", align_corners=False)
    return target if target.shape[0] == 1 else target[samples.to(target.device)]


def _guided_apply_model(state: GuidanceState, unet: torch.nn.Module, predictor: ModelPatcher, target: torch.Tensor,
                        executor, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options=None,
                        **kwargs):
    transformer_options = {} if transformer_options is None else transformer_options
    sigma = float(t.max())
    if not state.active(sigma) or COND not in (transformer_options.get("cond_or_uncond") or [COND]):
        return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)
    layers: tuple[Layer, ...] = predictor.model.info.layers
    with torch.inference_mode(False), torch.enable_grad(), inference_tensors.normal_tensor_views(unet), \
            inference_tensors.normal_tensor_views(predictor.model), inference_tensors.InferenceTensorsAsNormal():
        rows, chunk = _conditional_rows(transformer_options, x.shape[0])  # made here: autograd saves indices
        samples = rows % chunk
        # Tensors the host made under inference mode may not be saved for backward: use normal copies.
        x_grad = x.detach().clone().requires_grad_(True)
        t, c_concat, c_crossattn = (_normal_copy(v) for v in (t, c_concat, c_crossattn))
        kwargs = {k: _normal_copy(v) for k, v in kwargs.items()}
        skips = [block[-1] for block in unet.input_blocks] if control is not None else []
        options = transformer_options
        if "optimized_attention_override" not in options:  # another pack's choice of attention stays
            options = {**options, "optimized_attention_override": _differentiable_attention}
        with capture(unet, layers, tuple(x.shape[-2:]), rows) as captured, snapshots_of_outputs(skips):
            denoised = executor(x_grad, t, c_concat, c_crossattn, control, options, **kwargs)
        noise = noise_level(x_grad[rows], denoised[rows], t[rows]).detach()
        predicted = predictor.model(captured.features(), noise)
        loss = edge_loss(predicted, _target_for(state, target, samples, chunk, predicted))
        (grad,) = torch.autograd.grad(loss.sum(), x_grad)
    state.add_gradient(sigma, samples, grad[rows].detach(), chunk)
    state.losses.append(float(loss.mean()))
    return denoised.detach()


def _differentiable_attention(func, *args, **kwargs):
    """The host's attention for the guided pass, which takes a gradient through it: its sub-quadratic attention
    (chosen on CPUs and when memory is short) exponentiates in place, which autograd refuses, so PyTorch's
    attention runs instead there."""
    if getattr(func, "__name__", "") == "attention_sub_quad":
        return host_attention.attention_pytorch(*args, **kwargs)
    return func(*args, **kwargs)


def _normal_copy(value):
    return value.detach().clone() if isinstance(value, torch.Tensor) and value.is_inference() else value


def _guidance_step(state: GuidanceState, args: dict) -> torch.Tensor:
    denoised, x = args["denoised"], args["input"]
    grad = state.take_gradient(float(args["sigma"].max()), x)
    if grad is None:
        return denoised
    return guided_denoised(x, denoised, grad, state.strength)


# --- Reading activations outside sampling (training, evaluation) -------------------------------------------


class _FeatureProbe(comfy.samplers.Sampler):
    """A 'sampler' that makes one model call at the first sigma and keeps the chosen layers' activations."""

    def __init__(self, unet: torch.nn.Module, layers: tuple[Layer, ...]) -> None:
        self.unet, self.layers = unet, layers
        self.result: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        sigma = sigmas[:1].expand(noise.shape[0])
        x = model_wrap.inner_model.model_sampling.noise_scaling(sigma, noise, latent_image)
        with capture(self.unet, self.layers, tuple(x.shape[-2:])) as captured:
            denoised = model_wrap(x, sigma, **extra_args)
        self.result = (captured.features(), x, denoised)
        return latent_image


def probe_features(model: ModelPatcher, positive, latent: torch.Tensor, sigma: float, noise: torch.Tensor,
                   layers: tuple[Layer, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Activations, noisy input and denoised estimate for model-space `latent` + sigma * `noise`, one
    conditional model call made the way the host's samplers make it (conds, patches, model loading)."""
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(positive, positive)
    guider.set_cfg(1.0)  # the conditional branch only
    probe = _FeatureProbe(model.model.diffusion_model, layers)
    unscaled = model.model.latent_format.process_out(latent)  # the guider scales it back
    sigmas = torch.tensor([sigma, 0.0])
    with torch.no_grad():
        guider.sample(noise, unscaled, probe, sigmas, disable_pbar=True, seed=0)
    return probe.result


def torch_device() -> torch.device:
    """The device the host runs models on (after --cpu and, under torchrun, this process's GPU)."""
    return mm.get_torch_device()


class HostFeatureSource:
    """The training's view of the host: VAE, text encoder and UNet of the user's checkpoint."""

    def __init__(self, model: ModelPatcher, vae, clip, layer_set_name: str) -> None:
        from .features import layer_set

        self.model, self.vae, self.clip = model, vae, clip
        self.base = base_of(model)
        self.layer_set, self.layers = layer_set_name, layer_set(layer_set_name)
        self.feature_channels = feature_channels(model.model.diffusion_model, self.layers)
        self.device = torch_device()
        self._conds: dict[str, list] = {}

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return encode_pixels(self.vae, self.model, pixels).to(self.device)

    def features(self, latent: torch.Tensor, caption: str, fraction: float,
                 noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if caption not in self._conds:
            with torch.no_grad():
                self._conds[caption] = common_host.encode_prompt(self.clip, caption)
        sampling = self.model.get_model_object("model_sampling")
        sigma = float(sampling.sigma(torch.tensor(fraction * 999.0)))
        features, _, _ = probe_features(self.model, self._conds[caption], latent, sigma, noise, self.layers)
        level = noise * sigma / (1.0 + sigma**2) ** 0.5
        return features.to(self.device), level.to(features.device)


def load_checkpoint(path: str):
    """MODEL, CLIP and VAE of a checkpoint file, loaded by the host as its loader node does."""
    import comfy.sd

    model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(
        path, output_vae=True, output_clip=True, embedding_directory=folder_paths.get_folder_paths("embeddings"))
    return model, clip, vae
