"""Tiny host MODELs of the latent spaces beyond SD1.5/SDXL (FLUX.1, SD3, Qwen-Image; FLUX.2 is in flux_models),
built from ComfyUI's own model configs with random weights: what matters is the latent format the host gives each.
"""

from __future__ import annotations

import dataclasses

import comfy.ldm.flux.model
import comfy.model_detection
import comfy.model_management as mm
import comfy.model_patcher
import comfy.supported_models
import torch

from .flux_models import tiny_flux2
from .host_models import randomize, tiny_model

SD3_UNET = {"in_channels": 16, "out_channels": 16, "patch_size": 2, "depth": 1, "input_size": None,
            "adm_in_channels": 32, "pos_embed_max_size": 8, "num_patches": 64, "pos_embed_scaling_factor": None,
            "context_embedder_config": {"target": "torch.nn.Linear", "params": {"in_features": 32, "out_features": 64}},
            "x_block_self_attn_layers": []}
QWEN_IMAGE_UNET = {"image_model": "qwen_image", "patch_size": 2, "in_channels": 64, "out_channels": 16,
                   "num_layers": 1, "attention_head_dim": 16, "num_attention_heads": 1, "joint_attention_dim": 16,
                   "axes_dims_rope": (4, 6, 6)}
FLUX1_UNET = {"image_model": "flux", "in_channels": 16, "out_channels": 16, "vec_in_dim": 32, "context_in_dim": 32,
              "hidden_size": 64, "mlp_ratio": 2.0, "num_heads": 2, "depth": 1, "depth_single_blocks": 1,
              "axes_dim": [8, 12, 12], "theta": 10000, "qkv_bias": True, "guidance_embed": False, "patch_size": 2,
              "txt_ids_dims": []}


def _model(config_class, unet: dict) -> comfy.model_patcher.ModelPatcher:
    config = config_class(dict(unet))
    config.set_inference_dtype(torch.float32, None)
    base = config.get_model({}, "", device=torch.device("cpu"))
    randomize(base.diffusion_model, 0)
    return comfy.model_patcher.ModelPatcher(base, load_device=mm.get_torch_device(),
                                            offload_device=mm.unet_offload_device())


def tiny_sd3() -> comfy.model_patcher.ModelPatcher:
    return _model(comfy.supported_models.SD3, SD3_UNET)


def tiny_qwen_image() -> comfy.model_patcher.ModelPatcher:
    return _model(comfy.supported_models.QwenImage, QWEN_IMAGE_UNET)


def tiny_flux1() -> comfy.model_patcher.ModelPatcher:
    known = {f.name for f in dataclasses.fields(comfy.ldm.flux.model.FluxParams)} | {"image_model"}
    return _model(comfy.supported_models.Flux, {k: v for k, v in FLUX1_UNET.items() if k in known})  # per host


MODELS = {"SD15": lambda: tiny_model("SD15"), "SDXL": lambda: tiny_model("SDXL"), "Flux": tiny_flux1,
          "SD3": tiny_sd3, "Flux2": tiny_flux2, "Wan21": tiny_qwen_image}  # by the host's latent format name


# Families sampling FLUX.1's latents (the host gives them its Flux latent format) that are not FLUX.1: the keys by
# which the host's detection tells each apart, with the shapes of the released models.
FLUX_LATENT_FAMILIES = {
    "ZImage": {"cap_embedder.1.weight": (3840, 2560), "noise_refiner.0.attention.k_norm.weight": (128,),
               "layers.0.ffn_norm1.weight": (3840,)},
    "Lumina2": {"cap_embedder.1.weight": (2304, 2304), "noise_refiner.0.attention.k_norm.weight": (96,),
                "layers.0.ffn_norm1.weight": (2304,)},
    "Chroma": {"double_blocks.0.img_attn.norm.key_norm.scale": (128,), "img_in.weight": (3072, 64),
               "txt_in.weight": (3072, 4096), "distilled_guidance_layer.0.norms.0.scale": (5120,),
               "single_blocks.0.norm.key_norm.scale": (128,)},
    "HiDream": {"caption_projection.0.linear.weight": (2560, 4096)},
}


def weightless_model(family: str) -> comfy.model_patcher.ModelPatcher:
    """A full-size MODEL of `family` (a FLUX_LATENT_FAMILIES key) as the host detects it from its keys, built on
    the meta device: its config class and latent format are the host's, it holds no weights and cannot sample."""
    meta = torch.device("meta")
    state = {key: torch.empty(shape, device=meta) for key, shape in FLUX_LATENT_FAMILIES[family].items()}
    config = comfy.model_detection.model_config_from_unet(state, "")
    if config is None or type(config).__name__ != family:
        raise AssertionError(f"the host detects {type(config).__name__} from the {family} keys")
    return comfy.model_patcher.ModelPatcher(config.get_model(state, "", device=meta), load_device=meta,
                                            offload_device=meta)
