"""LayerDiffusion UNet weight files in the published key formats, built for a given model's own layers."""

from __future__ import annotations

from pathlib import Path

import safetensors.torch
import torch
from comfyui_layer_sketch.common import files
from comfyui_layer_sketch.layer_model.attention_sharing import AttentionSharingLayers, SharingState, attention_paths

from .published_keys import LORA_TARGETS


def _random(shape, generator, scale=0.05) -> torch.Tensor:
    return torch.randn(shape, generator=generator) * scale


def sdxl_attention_lora(model, rank: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    """`::lora::0/1` pairs on attn1 q/k/v/out and attn2 q/out of every transformer block."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, weight in model.model.state_dict().items():
        if key.startswith("diffusion_model.") and key.endswith(LORA_TARGETS):
            state[f"{key}::lora::0"] = _random((weight.shape[0], rank), generator)
            state[f"{key}::lora::1"] = _random((rank, weight.shape[1]), generator)
    return state


def sdxl_conv_diff(model, seed: int = 0, extra_input_channels: int = 0) -> dict[str, torch.Tensor]:
    """`::diff::0` offsets for every non-attention weight; conv_in widened for concatenated conditions."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, weight in model.model.state_dict().items():
        if key.startswith("diffusion_model.") and key.endswith(".weight") and ".attn" not in key:
            shape = list(weight.shape)
            if key == "diffusion_model.input_blocks.0.0.weight":
                shape[1] += extra_input_channels
            state[f"{key}::diff::0"] = _random(shape, generator, 0.01)
    return state


def attention_sharing(model, frames: int, use_control: bool, seed: int = 0) -> dict[str, torch.Tensor]:
    """`hookers.layers.N.*` (+ `kwargs_encoder.*`) for the model's own attention modules."""
    torch.manual_seed(seed)
    unet = model.model.diffusion_model
    originals = [unet.get_submodule(p.removeprefix("diffusion_model.")) for p in attention_paths(unet)]
    layers = AttentionSharingLayers(originals, frames, use_control, SharingState())
    return {k: v.contiguous() for k, v in layers.state_dict().items()}


def save(state: dict[str, torch.Tensor], path: Path) -> Path:
    if path.is_symlink():  # a cached fixture linked in: replace the link, never write through it
        path.unlink()
    safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


MANIFEST = Path(__file__).resolve().parent.parent / "data" / "sd15_attention_sharing.txt"
SECTIONS = {"transparent_attn": "a", "joint": "b", "fg2bg": "c", "bg2fg": "c"}


def published_sharing_shapes(section: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a published SD1.5 attention-sharing file, from the manifest (a, b or c)."""
    shapes, current = {}, None
    for line in MANIFEST.read_text().splitlines():
        if line.startswith("==="):
            current = line.split("(", 1)[1][0]
        elif line.strip() and current == section:
            key, shape = line.split(" ", 1)
            shapes[key] = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
    return shapes


def published_sharing_file(cache: Path, name: str, seed: int = 0) -> Path:
    """`layer_sd15_<name>.safetensors` with the published keys and shapes, random fp16 values (cached)."""
    path = cache / f"random_layer_sd15_{name}_s{seed}.safetensors"
    if not path.exists():
        generator = torch.Generator().manual_seed(seed)
        state = {}
        for key, shape in published_sharing_shapes(SECTIONS[name]).items():
            if key.endswith(".bias") or "temporal_n" in key:
                value = torch.ones(shape) if "temporal_n.weight" in key else torch.zeros(shape)
            else:
                value = torch.randn(shape, generator=generator) * (0.02 if "lora" not in key else 0.01)
            state[key] = value.half()
        with files.atomic_path(path) as tmp:
            save(state, Path(tmp))
    return path
