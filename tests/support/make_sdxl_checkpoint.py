"""Write an SDXL checkpoint with random bf16 weights and, optionally, a random `layer_xl_transparent_attn` LoRA.

The checkpoint (UNet + CLIP-L + CLIP-G + VAE, original key layout) is built from the host's own classes and saved
through the host's own "for saving" key conversions, so `CheckpointLoaderSimple` detects it as SDXL: full size
(3.5 B parameters, about 6.9 GB) or, with `--layout vega`, Segmind Vega's fewer transformer blocks, which the host
detects as its SDXL subclass `Segmind_Vega` (1.6 B parameters, 3.3 GB; text encoders and VAE at full size).
The LoRA has the published keys and rank (256) for every attention projection the published file covers, sized
from this UNet's own weights.
Usage: python make_sdxl_checkpoint.py CHECKPOINT.safetensors [LORA.safetensors] [--layout full|vega]
       (with a host venv's Python)
"""

from __future__ import annotations

import argparse

import host_first  # ComfyUI in-process (CPU-only without CUDA), before its modules

import comfy.sdxl_clip
import comfy.supported_models
import comfy.utils
import torch
from comfy.ldm.models.autoencoder import AutoencoderKL
from host_models import SDXL_FULL_UNET, SEGMIND_VEGA_UNET, randomize  # tests/support: this script's folder
from published_keys import LORA_TARGETS

SDXL_VAE = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
            "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
DTYPE = torch.bfloat16
LORA_RANK = 256
LAYOUTS = {"full": (comfy.supported_models.SDXL, SDXL_FULL_UNET),
           "vega": (comfy.supported_models.Segmind_Vega, SEGMIND_VEGA_UNET)}


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


def main(checkpoint_out: str, lora_out: str | None, layout: str = "full") -> None:
    generator = torch.Generator().manual_seed(0)
    config_class, unet_config = LAYOUTS[layout]
    config = config_class(dict(unet_config))
    config.set_inference_dtype(DTYPE, None)

    unet = _unet_state(config, generator)
    if lora_out is not None:  # drawn before the text encoders, so the full-size files stay as they were
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("lora", nargs="?")
    parser.add_argument("--layout", choices=sorted(LAYOUTS), default="full")
    options = parser.parse_args()
    main(options.checkpoint, options.lora, options.layout)
