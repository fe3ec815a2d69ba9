"""Write a full-size SDXL checkpoint with random bf16 weights and a random `layer_xl_transparent_attn` LoRA.

The checkpoint (UNet + CLIP-L + CLIP-G + VAE, original key layout, 3.5 B parameters, about 6.9 GB) is built
from the host's own classes and saved through the host's own "for saving" key conversions, so
`CheckpointLoaderSimple` detects it as SDXL. The LoRA has the published keys and rank (256) for every
attention projection the published file covers, sized from this UNet's own weights.
Usage: python make_sdxl_checkpoint.py CHECKPOINT.safetensors LORA.safetensors   (with a host venv's Python)
"""

from __future__ import annotations

import sys

import host_first  # ComfyUI in-process (CPU-only without CUDA), before its modules

import comfy.sdxl_clip
import comfy.supported_models
import comfy.utils
import torch
from comfy.ldm.models.autoencoder import AutoencoderKL
from host_models import SDXL_FULL_UNET as SDXL_UNET  # tests/support: this script's folder
from host_models import randomize
from published_keys import LORA_TARGETS

SDXL_VAE = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
            "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
DTYPE = torch.bfloat16
LORA_RANK = 256


def _unet_state(config, generator: torch.Generator) -> dict[str, torch.Tensor]:
    unet = config.get_model({}, "", device=torch.device("cpu")).diffusion_model.to(DTYPE)
    randomize(unet, generator)
    return {k: v for k, v in unet.state_dict().items()}


def _clip_state(config, generator: torch.Generator) -> dict[str, torch.Tensor]:
    clip = comfy.sdxl_clip.SDXLClipModel(device="cpu", dtype=DTYPE)
    randomize(clip, generator)
    state = {k: v for k, v in clip.state_dict().items()}
    return config.process_clip_state_dict_for_saving(state)


def _lora_state(unet_state: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
    state = {}
    for key, weight in unet_state.items():
        if key.endswith(LORA_TARGETS):
            name = "diffusion_model." + key
            state[f"{name}::lora::0"] = (torch.randn((weight.shape[0], LORA_RANK), generator=generator) * 0.01).half()
            state[f"{name}::lora::1"] = (torch.randn((LORA_RANK, weight.shape[1]), generator=generator) * 0.01).half()
    return state


def _save(state: dict[str, torch.Tensor], out: str) -> None:
    comfy.utils.save_torch_file({k: v.contiguous() for k, v in state.items()}, out)


def main(checkpoint_out: str, lora_out: str) -> None:
    generator = torch.Generator().manual_seed(0)
    config = comfy.supported_models.SDXL(dict(SDXL_UNET))
    config.set_inference_dtype(DTYPE, None)

    unet = _unet_state(config, generator)
    _save(_lora_state(unet, generator), lora_out)
    state = {"model.diffusion_model." + k: v for k, v in unet.items()}
    del unet
    clip = _clip_state(config, generator)
    state.update(clip)
    del clip

    vae = AutoencoderKL(ddconfig=SDXL_VAE, embed_dim=4)
    randomize(vae, generator)
    state.update({"first_stage_model." + k: v.to(DTYPE) for k, v in vae.state_dict().items()})
    _save(state, checkpoint_out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
