"""A reduced Z-Image (Turbo) transformer with random values that the host detects as Z-Image from its keys.

Z-Image keeps FLUX.1's `ae` latent (16 channels, the host's `Flux` latent format). The host tells Z-Image from
Lumina 2 by the width (3840), so the file keeps the real widths and heads; it has one main layer (of 30) and the
two noise and two context refiner layers that the host builds whatever the file holds. Its caption embedder
takes 768-wide features (the host reads the width from the file) instead of Qwen3-4B's 2560: the tests' real
host CLIP-L (of the random SD1.5 checkpoint) stands in for the 4 B-parameter text encoder, in the dataset node
and the prompts alike. Built from the host's own NextDiT on the meta device, so its keys are the host's.
"""

from __future__ import annotations

from pathlib import Path

import comfy.ldm.lumina.model
import comfy.ops
import comfy.sd
import torch

from . import fixtures

DIM, CAPTION_FEATURES, CLIP_L_FEATURES, LATENT_CHANNELS = 3840, 2560, 768, 16
REDUCED_ZIMAGE = "random_zimage_turbo_l1_clip_l_out2e-3.safetensors"
# A zero output layer (as DiT-family models start) would give every LoRA upstream of it a zero gradient; a small
# random one keeps the base's samples at about their starting noise while training reaches every layer.
OUTPUT_STD = 0.002
# As the host's model detection reads a Z-Image file (dim 3840), with the file's layer count.
ZIMAGE_CONFIG = {"patch_size": 2, "in_channels": LATENT_CHANNELS, "dim": DIM, "cap_feat_dim": CAPTION_FEATURES,
                 "qk_norm": True, "n_heads": 30, "n_kv_heads": 30, "axes_dims": [32, 48, 48],
                 "axes_lens": [1536, 512, 512], "rope_theta": 256.0, "ffn_dim_multiplier": 8.0 / 3.0,
                 "z_image_modulation": True, "time_scale": 1000.0, "pad_tokens_multiple": 32}


def zimage_state(layers: int = 1, caption_features: int = CAPTION_FEATURES, seed: int = 0,
                 dtype=torch.bfloat16) -> dict[str, torch.Tensor]:
    """The Z-Image transformer's keys: norm scales 1, biases 0, the output layer N(0, OUTPUT_STD), other weights
    N(0, 0.02)."""
    config = dict(ZIMAGE_CONFIG, cap_feat_dim=caption_features)
    model = comfy.ldm.lumina.model.NextDiT(**config, n_layers=layers, device="meta",
                                           operations=comfy.ops.disable_weight_init)
    norms = {f"{name}.weight" for name, module in model.named_modules()
             if "norm" in type(module).__name__.lower()}
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in model.state_dict().items():
        if key in norms:
            state[key] = torch.ones(value.shape, dtype=dtype)
        elif key.endswith(".bias"):
            state[key] = torch.zeros(value.shape, dtype=dtype)
        else:
            std = OUTPUT_STD if key.startswith("final_layer.linear.") else 0.02
            state[key] = (torch.randn(value.shape, generator=generator) * std).to(dtype)
    return state


def reduced_zimage_file(cache: Path) -> Path:
    """The reduced Z-Image in bf16 (made once, cached)."""
    path = cache / REDUCED_ZIMAGE
    if not path.exists():
        fixtures._save(zimage_state(caption_features=CLIP_L_FEATURES), path)
    return path


def load_reduced_zimage(cache: Path):
    """The reduced Z-Image as the host's Load Diffusion Model gives it (detected from the file)."""
    return comfy.sd.load_diffusion_model(str(reduced_zimage_file(cache)))

