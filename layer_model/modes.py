"""The LayerDiffusion modes: which weight file, which base model, how many layers (pure data)."""

from __future__ import annotations

from dataclasses import dataclass

from .weights import SD15, SDXL


@dataclass(frozen=True)
class LayerMode:
    name: str  # what users pick in the node; saved in workflows, so never renamed
    base: str
    file: str
    frames: int = 1  # layers generated together per sample (SD1.5 attention sharing)
    use_control: bool = False  # SD1.5: a given layer steers the others through a control image
    kind: str = "attention_sharing"  # or "weights" (SDXL LoRA/diff merged into the UNet)


TRANSPARENT_MODES = (
    LayerMode("SDXL transparent (attention injection)", SDXL, "layer_xl_transparent_attn.safetensors",
              kind="weights"),
    LayerMode("SDXL transparent (conv injection)", SDXL, "layer_xl_transparent_conv.safetensors", kind="weights"),
    LayerMode("SD1.5 transparent (attention sharing)", SD15, "layer_sd15_transparent_attn.safetensors"),
)
AUTO = "auto"


def transparent_mode(name: str, base: str) -> LayerMode:
    """The mode called `name`, or for 'auto' the first transparent mode of `base`."""
    for mode in TRANSPARENT_MODES:
        if mode.name == name or (name == AUTO and mode.base == base):
            return mode
    raise ValueError(f"unknown mode {name!r}; choose one of {[AUTO] + [m.name for m in TRANSPARENT_MODES]}")
