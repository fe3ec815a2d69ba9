"""The RGBA VAEs' LoRAs on a MODEL clone through the host's own LoRA path, every key checked first.

The host's LoRA loaders (Load LoRA, LoraLoaderModelOnly) read these files as they are: the host maps AlphaVAE's
diffusers keys onto FLUX.1's fused weights and flux2-klein-alpha's `diffusion_model.` keys onto FLUX.2's by name.
They skip a key they cannot place and say so only in the log; this applies a file all or nothing, as Layer Diffuse
Apply does the FLUX LayerDiffuse LoRA (`host_patches.apply_lora_file`).
"""

from __future__ import annotations

import comfy.model_patcher
import folder_paths

from . import host, host_patches, weights
from .rgba_loras import RGBA_VAE_LORAS, RGBAVAELoRA

LORA_FOLDER = "loras"


def rgba_vae_lora_choices() -> list[str]:
    """The published LoRAs (downloaded when chosen and missing), then the files of the host's loras folders."""
    published = list(RGBA_VAE_LORAS)
    local = [name for name in folder_paths.get_filename_list(LORA_FOLDER)
             if name.endswith(".safetensors") and name not in published]
    return published + local


def rgba_vae_lora_path(name: str) -> str:
    return host.chosen_file(name, RGBA_VAE_LORAS, LORA_FOLDER)


def check_model_fits(model: comfy.model_patcher.ModelPatcher, lora: RGBAVAELoRA) -> None:
    """Refuse, before any file is read, a model of another family or width than the LoRA was trained on."""
    family, config = host.flux_architecture(model), model.model.model_config
    expected = weights.REGISTRY[lora.file].base
    if family != expected:
        raise ValueError(f"{lora.file} is a LoRA for {lora.model}, but the connected MODEL is "
                         f"{type(config).__name__}. Load {lora.model} with Load Diffusion Model and connect it.")
    width = config.unet_config.get("hidden_size")
    if width != lora.hidden_size:
        raise ValueError(f"{lora.file} is a LoRA for {lora.model} (width {lora.hidden_size}), but the connected "
                         f"{expected} model is {width} wide (FLUX.2 Klein 4B: 3072, Klein 9B: 4096, FLUX.2-dev: 6144). "
                         f"Load {lora.model}, or choose the LoRA made for this model.")


def _needs(name: str) -> str:
    lora = RGBA_VAE_LORAS.get(name)
    if lora is None:
        return ("Layer Diffuse Apply RGBA VAE LoRA takes LoRAs whose keys the host maps onto this model (lora_A/"
                "lora_B pairs); check that the file is for this model.")
    return (f"It should be {weights.REGISTRY[name].description} for {lora.model}; delete the file and run the graph "
            "again to download the published one.")


def apply_rgba_vae_lora(model: comfy.model_patcher.ModelPatcher, name: str, strength: float,
                        start_percent: float = 0.0, end_percent: float = 1.0) -> comfy.model_patcher.ModelPatcher:
    """A clone of `model` with the LoRA `name` (published or from the loras folders) at `strength`, every key on a
    weight of the model or nothing applied; over part of the sampling when start/end percent say so."""
    lora = RGBA_VAE_LORAS.get(name)
    if lora is not None:
        check_model_fits(model, lora)
    sigmas = host_patches.sigma_range(model, start_percent, end_percent)
    return host_patches.apply_lora_file(model, rgba_vae_lora_path(name), _needs(name), strength, sigmas)
