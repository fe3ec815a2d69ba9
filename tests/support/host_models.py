"""Small real host models (SD1.5- and SDXL-shaped UNets, a KL VAE), built from ComfyUI's own classes."""

from __future__ import annotations

import comfy.model_management as mm
import comfy.model_patcher
import comfy.sd
import comfy.supported_models
import torch
from comfy.ldm.models.autoencoder import AutoencoderKL

TINY_SD15_UNET = {
    "use_checkpoint": False, "image_size": 32, "in_channels": 4, "out_channels": 4,
    "model_channels": 32, "num_res_blocks": [1, 1, 1, 1], "channel_mult": [1, 2, 2, 2],
    "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "transformer_depth_output": [1, 1, 1, 1, 1, 1, 0, 0],
    "transformer_depth_middle": 1, "use_spatial_transformer": True, "legacy": False,
    "use_linear_in_transformer": False, "context_dim": 768, "adm_in_channels": None,
    "use_temporal_attention": False, "use_temporal_resblock": False,
}
TINY_SDXL_UNET = {  # SDXL uses 64-channel attention heads: 64 is the smallest width with one head
    "use_checkpoint": False, "image_size": 32, "in_channels": 4, "out_channels": 4,
    "model_channels": 64, "num_res_blocks": [1, 1, 1], "channel_mult": [1, 2, 2],
    "transformer_depth": [0, 0, 1, 1, 1, 1], "transformer_depth_output": [0, 0, 0, 1, 1, 1, 1, 1, 1],
    "transformer_depth_middle": 1, "use_spatial_transformer": True, "legacy": False,
    "use_linear_in_transformer": True, "context_dim": 2048, "adm_in_channels": 2816,
    "num_classes": "sequential", "use_temporal_attention": False, "use_temporal_resblock": False,
}
SD15_FULL_UNET = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True, "legacy": False,
    "adm_in_channels": None, "in_channels": 4, "model_channels": 320, "num_res_blocks": [2, 2, 2, 2],
    "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "channel_mult": [1, 2, 4, 4], "transformer_depth_middle": 1,
    "use_linear_in_transformer": False, "context_dim": 768,
    "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
    "use_temporal_attention": False, "use_temporal_resblock": False,
}
# The SD1.5 block layout (12 input blocks, 3-child middle block, 12 output blocks) at a tenth of the width:
# every layer the sketch-guidance layer sets name exists, with a tenth of the channels.
NARROW_SD15_UNET = dict(TINY_SD15_UNET, num_res_blocks=[2, 2, 2, 2], channel_mult=[1, 2, 4, 4],
                        transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0],
                        transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0])
SDXL_FULL_UNET = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True, "legacy": False,
    "num_classes": "sequential", "adm_in_channels": 2816, "in_channels": 4, "model_channels": 320,
    "num_res_blocks": [2, 2, 2], "transformer_depth": [0, 0, 2, 2, 10, 10], "channel_mult": [1, 2, 4],
    "transformer_depth_middle": 10, "use_linear_in_transformer": True, "context_dim": 2048,
    "num_head_channels": 64, "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10],
    "use_temporal_attention": False, "use_temporal_resblock": False,
}
# Segmind Vega's published layout (the host's `Segmind_Vega`, an SDXL subclass with SDXL latents): SDXL's widths,
# blocks and text encoders with fewer transformer blocks (6 down, 9 up, none in the middle; SDXL has 70):
# 745 M UNet parameters against 2.6 B, the smallest reduced SDXL the host detects.
SEGMIND_VEGA_UNET = dict(SDXL_FULL_UNET, transformer_depth=[0, 0, 1, 1, 2, 2], transformer_depth_middle=-1,
                         transformer_depth_output=[0, 0, 0, 1, 1, 1, 2, 2, 2])
# The SDXL block layout (9 input blocks, 3-child middle block, 9 output blocks) at a fifth of the width
# (SDXL's 64-channel attention heads need at least 64 channels).
NARROW_SDXL_UNET = dict(TINY_SDXL_UNET, num_res_blocks=[2, 2, 2], channel_mult=[1, 2, 4],
                        transformer_depth=[0, 0, 1, 1, 1, 1], transformer_depth_output=[0, 0, 0, 1, 1, 1, 1, 1, 1])
SMALL_VAE = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 32,
             "ch_mult": [1, 2, 4, 4], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0}


def randomize(module: torch.nn.Module, seed: int | torch.Generator) -> None:
    """The host's layers start uninitialised; give them small, finite random values."""
    generator = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if param.ndim > 1:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
            elif name.endswith("weight"):
                param.fill_(1.0)
            else:
                param.zero_()


def tiny_model(kind: str = "SD15", seed: int = 0) -> comfy.model_patcher.ModelPatcher:
    return random_model(kind, {"SD15": TINY_SD15_UNET, "SDXL": TINY_SDXL_UNET}[kind], seed)


def loader_model(kind: str = "SD15", seed: int = 0) -> comfy.model_patcher.ModelPatcher:
    """`tiny_model` as a custom loader gives it: with the factory the host calls for a private copy of the model
    (`cached_patcher_init`, which Train LoRA's deep copy needs since ComfyUI 0.30; older hosts ignore it)."""
    model = tiny_model(kind, seed)
    model.cached_patcher_init = (_reloaded_tiny_model, (kind, seed))
    return model


def _reloaded_tiny_model(kind: str, seed: int, disable_dynamic: bool = False) -> comfy.model_patcher.ModelPatcher:
    return tiny_model(kind, seed)


def random_model(kind: str, unet: dict, seed: int = 0) -> comfy.model_patcher.ModelPatcher:
    """A host MODEL of the SD1.5 or SDXL family with the given UNet layout and random weights."""
    config_class = {"SD15": comfy.supported_models.SD15, "SDXL": comfy.supported_models.SDXL}[kind]
    config = config_class(dict(unet))
    config.set_inference_dtype(torch.float32, None)
    base = config.get_model({}, "", device=torch.device("cpu"))
    base.diffusion_model.float()
    randomize(base.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(base, load_device=mm.get_torch_device(),
                                            offload_device=mm.unet_offload_device())


def small_vae(seed: int = 0) -> comfy.sd.VAE:
    """A real host VAE object (the SD KL autoencoder, narrower) with random weights."""
    autoencoder = AutoencoderKL(ddconfig=SMALL_VAE, embed_dim=4)
    randomize(autoencoder, seed)
    with torch.no_grad():  # a posterior with some spread, as trained VAEs have
        autoencoder.quant_conv.weight.mul_(20.0)
    state = autoencoder.state_dict()
    return comfy.sd.VAE(sd=state, config={"params": {"ddconfig": SMALL_VAE, "embed_dim": 4}})


def patcher_of(module: torch.nn.Module) -> comfy.model_patcher.ModelPatcher:
    """A module wrapped for host model management, as the pack's loader nodes wrap theirs."""
    return comfy.model_patcher.ModelPatcher(module, load_device=mm.get_torch_device(),
                                            offload_device=mm.unet_offload_device())
