"""A user's LoRA in the kohya format the host's LoraLoader reads, made for a given model (and CLIP)."""

from __future__ import annotations

from pathlib import Path

import comfy.lora
import safetensors.torch
import torch


def _pairs(key_map: dict[str, str], weights: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """lora_down/lora_up/alpha for each 2-D weight the host maps from a `prefix` LoRA key."""
    generator = torch.Generator().manual_seed(len(key_map))
    state = {}
    for lora_key, weight_key in sorted(key_map.items()):
        weight = weights.get(weight_key)
        if not lora_key.startswith(prefix) or weight is None or weight.ndim != 2:
            continue
        rank = 4
        state[f"{lora_key}.lora_down.weight"] = torch.randn(rank, weight.shape[1], generator=generator) * 0.1
        state[f"{lora_key}.lora_up.weight"] = torch.randn(weight.shape[0], rank, generator=generator) * 0.1
        state[f"{lora_key}.alpha"] = torch.tensor(float(rank))
    return state


def write_lora(folder: Path, model, clip=None, name: str = "user_lora.safetensors") -> str:
    """A LoRA on every linear layer of the UNet (and the text encoder): the name LoraLoader takes."""
    state = _pairs(comfy.lora.model_lora_keys_unet(model.model, {}), model.model.state_dict(), "lora_unet_")
    if clip is not None:
        encoder = clip.cond_stage_model
        text = _pairs(comfy.lora.model_lora_keys_clip(encoder, {}), encoder.state_dict(), "lora_te")
        if not text:
            raise ValueError("the host maps no text-encoder LoRA keys for this CLIP")
        state |= text
    safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, str(folder / name))
    return name
