"""Write an SD1.5 checkpoint (UNet + CLIP-L + VAE, original LDM keys) with random weights.

Built from the host's own classes so that `CheckpointLoaderSimple` detects it as SD1.5. `--slim` keeps the
UNet's block layout and its 320 base channels (what the host's SD1.5 detection checks) but does not widen
the deeper levels: a checkpoint that loads and trains like SD1.5 at a fraction of the cost.
Usage: python make_sd15_checkpoint.py OUT.safetensors [--slim]   (with a host venv's Python)
"""

from __future__ import annotations

import sys

import host_first  # ComfyUI in-process (CPU-only without CUDA), before its modules

import comfy.sd1_clip
import comfy.supported_models
import comfy.utils
import torch
from comfy.ldm.models.autoencoder import AutoencoderKL
from host_models import SD15_FULL_UNET as SD15_UNET  # tests/support: this script's folder
from host_models import randomize

SD_VAE = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
          "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}


SLIM_SD15_UNET = dict(SD15_UNET, channel_mult=[1, 1, 1, 1])  # 2880 'paper' feature channels instead of 9280


def main(out: str, slim: bool = False) -> None:
    generator = torch.Generator().manual_seed(0)
    state: dict[str, torch.Tensor] = {}

    config = comfy.supported_models.SD15(SLIM_SD15_UNET if slim else SD15_UNET)
    config.set_inference_dtype(torch.float32, None)
    unet = config.get_model({}, "", device=torch.device("cpu")).diffusion_model.float()
    randomize(unet, generator)
    state.update({"model.diffusion_model." + k: v.half() for k, v in unet.state_dict().items()})
    del unet

    clip = comfy.sd1_clip.SD1ClipModel(device="cpu", dtype=torch.float32)
    randomize(clip, generator)
    for key, value in clip.state_dict().items():
        if key.startswith("clip_l.transformer.") and not key.endswith(("text_projection.weight", "logit_scale")):
            state["cond_stage_model." + key[len("clip_l."):]] = value.half()
    del clip

    vae = AutoencoderKL(ddconfig=SD_VAE, embed_dim=4)
    randomize(vae, generator)
    state.update({"first_stage_model." + k: v.half() for k, v in vae.state_dict().items()})

    comfy.utils.save_torch_file({k: v.contiguous() for k, v in state.items()}, out)


if __name__ == "__main__":
    main(sys.argv[1], slim="--slim" in sys.argv[2:])
