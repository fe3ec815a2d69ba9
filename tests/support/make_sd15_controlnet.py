"""Write a full-size SD1.5 ControlNet (original `control_model.` keys) with random weights.

Usage: python make_sd15_controlnet.py OUT.safetensors   (with a host venv's Python)
"""

from __future__ import annotations

import sys

import host_first  # ComfyUI in-process (CPU-only without CUDA), before its modules

import comfy.cldm.cldm
import comfy.ops
import comfy.utils
import torch
from host_models import randomize  # tests/support: this script's folder


def main(out: str) -> None:
    net = comfy.cldm.cldm.ControlNet(
        image_size=32, in_channels=4, model_channels=320, hint_channels=3, num_res_blocks=[2, 2, 2, 2],
        transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0], channel_mult=[1, 2, 4, 4], transformer_depth_middle=1,
        use_linear_in_transformer=False, context_dim=768, num_heads=8, num_head_channels=-1,
        use_spatial_transformer=True, legacy=False, adm_in_channels=None, use_checkpoint=False,
        operations=comfy.ops.disable_weight_init, dtype=torch.float32, device="cpu")
    randomize(net, torch.Generator().manual_seed(1))
    comfy.utils.save_torch_file({"control_model." + k: v.half().contiguous() for k, v in net.state_dict().items()},
                                out)


if __name__ == "__main__":
    main(sys.argv[1])
