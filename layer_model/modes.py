"""The LayerDiffusion modes: which weight file, which base model, how many layers (pure data)."""

from __future__ import annotations

from dataclasses import dataclass

from ._common import families
from .weights import FLUX, SD15, SDXL


@dataclass(frozen=True)
class LayerMode:
    name: str  # what users pick in the node; saved in workflows, so never renamed
    base: str
    file: str
    frames: int = 1  # layers generated together per sample (SD1.5 attention sharing)
    use_control: bool = False  # SD1.5: a given layer steers the others through a control image
    # "weights": SDXL LoRA/diff merged into the UNet; "diffusers_weights": the same from a file keyed by diffusers
    # UNet names; "peft_lora": FLUX LoRA
    kind: str = "attention_sharing"


TRANSPARENT_MODES = (
    LayerMode("SDXL transparent (attention injection)", SDXL, "layer_xl_transparent_attn.safetensors",
              kind="weights"),
    LayerMode("SDXL transparent (conv injection)", SDXL, "layer_xl_transparent_conv.safetensors", kind="weights"),
    LayerMode("SD1.5 transparent (attention sharing)", SD15, "layer_sd15_transparent_attn.safetensors"),
    LayerMode("FLUX.1 transparent (LoRA)", FLUX, "layerlora.safetensors", kind="peft_lora"),
    # Last, so that 'auto' keeps picking attention injection for SDXL.
    LayerMode("SDXL transparent (diffusers set)", SDXL, "ld_diffusers_sdxl_attn.safetensors",
              kind="diffusers_weights"),
)
WEIGHT_KINDS = ("weights", "diffusers_weights")  # the modes whose patches are weight deltas


def transparent_mode(name: str, base: str) -> LayerMode:
    """The mode called `name`, or for 'auto' the first transparent mode of `base`."""
    for mode in TRANSPARENT_MODES:
        if mode.name == name or (name == families.AUTO and mode.base == base):
            return mode
    choices = [families.AUTO] + [m.name for m in TRANSPARENT_MODES]
    raise ValueError(f"unknown mode {name!r}; choose one of {choices}")


JOINT_MODE = LayerMode("SD1.5 joint (foreground, background, blended)", SD15, "layer_sd15_joint.safetensors",
                       frames=3)
# For the two-layer files, frame 0 is the layer being generated and frame 1 the blended image.
COND_JOINT_MODES = (
    LayerMode("SD1.5 foreground to background + blended", SD15, "layer_sd15_fg2bg.safetensors",
              frames=2, use_control=True),
    LayerMode("SD1.5 background to foreground + blended", SD15, "layer_sd15_bg2fg.safetensors",
              frames=2, use_control=True),
)


def mode_named(name: str, modes: tuple[LayerMode, ...]) -> LayerMode:
    for mode in modes:
        if mode.name == name:
            return mode
    raise ValueError(f"unknown mode {name!r}; choose one of {[m.name for m in modes]}")


# SDXL layer models: diff weights with a wider conv_in, fed the given layer latent(s) by concatenation.
COND_MODES = (
    LayerMode("SDXL foreground to blended", SDXL, "layer_xl_fg2ble.safetensors", kind="weights"),
    LayerMode("SDXL background to blended", SDXL, "layer_xl_bg2ble.safetensors", kind="weights"),
)
DIFF_MODES = (
    LayerMode("SDXL foreground + blended to background", SDXL, "layer_xl_fgble2bg.safetensors", kind="weights"),
    LayerMode("SDXL background + blended to foreground", SDXL, "layer_xl_bgble2fg.safetensors", kind="weights"),
)
