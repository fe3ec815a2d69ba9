"""Nodes that turn an SDXL, SD1.5 or FLUX.1 MODEL into a transparent-image / layer generator."""

from __future__ import annotations

from ..common.families import AUTO
from ..layer_model import host, host_patches
from ..layer_model.modes import (
    COND_JOINT_MODES,
    COND_MODES,
    DIFF_MODES,
    JOINT_MODE,
    TRANSPARENT_MODES,
    WEIGHT_KINDS,
    mode_named,
    transparent_mode,
)

CATEGORY = "layer_diffuse"

WEIGHT = ("FLOAT", {"default": 1.0, "min": -1.0, "max": 3.0, "step": 0.01,
                    "tooltip": "Strength of the LayerDiffusion patch: 1 is as published, 0 leaves the model as it "
                               "was; in between blends, above 1 exaggerates."})
START = ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.001,
                   "tooltip": "Fraction of sampling after which the patch starts acting (0 = from the first step)."})
END = ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.001,
                 "tooltip": "Fraction of sampling after which the patch stops acting ('stop at'; 1 = to the end)."})
MODEL_OUT_TOOLTIP = "A patched copy of the model; the model you connected is left unchanged."


class _ModelPatchNode:
    """What the nodes returning only a patched MODEL share."""

    CATEGORY = CATEGORY
    FUNCTION = "apply"
    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = (MODEL_OUT_TOOLTIP,)


class LayerDiffuseApply(_ModelPatchNode):
    DESCRIPTION = ("Makes the model generate images with real transparency (decode them with Layer Diffuse "
                   "Decode). Works on SDXL, SD1.5 and FLUX.1 models; the weights download on first use.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "An SDXL or SD1.5 model (from Load Checkpoint), or FLUX.1 (from Load "
                                               "Diffusion Model)."}),
                "mode": ([AUTO] + [m.name for m in TRANSPARENT_MODES], {
                    "default": AUTO,
                    "tooltip": "'auto' picks the mode for the connected model: attention injection for SDXL, "
                               "attention sharing for SD1.5, the transparency LoRA for FLUX.1. Conv injection "
                               "(SDXL) keeps prompts a little less faithful but works with more fine-tunes. "
                               "The diffusers set (SDXL) is LayerDiffusion's second SDXL release: decode and "
                               "encode with its own codec ('published (SDXL diffusers set)')."}),
                "weight": WEIGHT,
            },
            "optional": {"start_percent": START, "end_percent": END},
        }

    def apply(self, model, mode, weight, start_percent=0.0, end_percent=1.0):
        chosen = transparent_mode(mode, host.base_from_model(model))
        if chosen.kind in WEIGHT_KINDS:
            return (host_patches.apply_weight_deltas(model, chosen, weight, 0, start_percent, end_percent),)
        if chosen.kind == "peft_lora":
            return (host_patches.apply_peft_lora(model, chosen, weight, start_percent, end_percent),)
        return (host_patches.apply_attention_sharing(model, chosen, weight, start_percent, end_percent),)


def _layer_prompt(which: str) -> tuple:
    return ("CONDITIONING", {"tooltip": f"Optional prompt for the {which} only (its conditional rows); without it "
                                        "the sampler's prompt is used for this layer too."})


class LayerDiffuseJointApply(_ModelPatchNode):
    DESCRIPTION = ("SD1.5: generates foreground (transparent), background and blended image together from one "
                   "seed. Use a batch size that is a multiple of 3; split the result with Layer Diffuse Decode "
                   "Split (layers = 3).")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "An SD1.5 model (from Load Checkpoint)."}),
                "weight": WEIGHT,
            },
            "optional": {
                "foreground_prompt": _layer_prompt("foreground"),
                "background_prompt": _layer_prompt("background"),
                "blended_prompt": _layer_prompt("blended image"),
                "start_percent": START, "end_percent": END,
            },
        }

    def apply(self, model, weight, foreground_prompt=None, background_prompt=None, blended_prompt=None,
              start_percent=0.0, end_percent=1.0):
        prompts = (foreground_prompt, background_prompt, blended_prompt)
        contexts = [host_patches.conditioning_context(c) for c in prompts]
        return (host_patches.apply_attention_sharing(model, JOINT_MODE, weight, start_percent, end_percent,
                                                     contexts),)


class LayerDiffuseCondJointApply(_ModelPatchNode):
    DESCRIPTION = ("SD1.5: given one layer (a foreground or a background image), generates the missing layer and "
                   "the blended image together. Batch size must be a multiple of 2; the condition image must have "
                   "the generated size. Split the result with Layer Diffuse Decode Split (layers = 2).")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "An SD1.5 model (from Load Checkpoint)."}),
                "image": ("IMAGE", {"tooltip": "The given layer: a (transparent) foreground for 'foreground to "
                                               "background', a background for the other mode. Same size as the "
                                               "generated image; transparency is put on 50% grey for you."}),
                "mode": ([m.name for m in COND_JOINT_MODES], {
                    "default": COND_JOINT_MODES[0].name,
                    "tooltip": "Which layer you give and which the model makes; the batch holds the made layer "
                               "then the blended image, per sample."}),
                "weight": WEIGHT,
            },
            "optional": {
                "layer_prompt": _layer_prompt("layer being generated"),
                "blended_prompt": _layer_prompt("blended image"),
                "start_percent": START, "end_percent": END,
            },
        }

    def apply(self, model, image, mode, weight, layer_prompt=None, blended_prompt=None, start_percent=0.0,
              end_percent=1.0):
        contexts = [host_patches.conditioning_context(c) for c in (layer_prompt, blended_prompt)]
        return (host_patches.apply_attention_sharing(model, mode_named(mode, COND_JOINT_MODES), weight,
                                                     start_percent, end_percent, contexts,
                                                     host_patches.control_image(image)),)


def _latent(tooltip: str) -> tuple:
    return ("LATENT", {"tooltip": tooltip})


class _ConditionPatchNode:
    """What the SDXL layer-model nodes share: they patch the MODEL and add the given layers to the prompts."""

    CATEGORY = CATEGORY
    FUNCTION = "apply"
    RETURN_TYPES = ("MODEL", "CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("model", "positive", "negative")
    OUTPUT_TOOLTIPS = (MODEL_OUT_TOOLTIP, "The positive prompt, now carrying the given layer(s).",
                       "The negative prompt, now carrying the given layer(s).")
    SAMPLING_INPUTS = {
        "model": ("MODEL", {"tooltip": "An SDXL model (from Load Checkpoint)."}),
        "positive": ("CONDITIONING", {"tooltip": "The prompt to sample with."}),
        "negative": ("CONDITIONING", {"tooltip": "The negative prompt to sample with."}),
    }


class LayerDiffuseCondApply(_ConditionPatchNode):
    DESCRIPTION = ("SDXL: generates the blended image from a given foreground or background layer (fed to the "
                   "model as a latent). Encode the layer with VAE Encode at the generated size; for a transparent "
                   "foreground put it on 50% grey first.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                **_ConditionPatchNode.SAMPLING_INPUTS,
                "layer": _latent("The given layer, VAE-encoded at the generated size."),
                "mode": ([m.name for m in COND_MODES], {"default": COND_MODES[0].name,
                                                         "tooltip": "Which layer you give."}),
                "weight": WEIGHT,
            },
            "optional": {"start_percent": START, "end_percent": END},
        }

    def apply(self, model, positive, negative, layer, mode, weight, start_percent=0.0, end_percent=1.0):
        return _condition_patch(model, positive, negative, [layer], mode_named(mode, COND_MODES), weight,
                                start_percent, end_percent)


class LayerDiffuseDiffApply(_ConditionPatchNode):
    DESCRIPTION = ("SDXL: given one layer and the blended image, generates the other layer (background from "
                   "foreground + blended, or foreground from background + blended). Encode both with VAE Encode "
                   "at the generated size.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                **_ConditionPatchNode.SAMPLING_INPUTS,
                "layer": _latent("The given layer (foreground or background), VAE-encoded at the generated size."),
                "blended": _latent("The blended image, VAE-encoded at the generated size."),
                "mode": ([m.name for m in DIFF_MODES], {"default": DIFF_MODES[0].name,
                                                         "tooltip": "Which layer you give and which is made."}),
                "weight": WEIGHT,
            },
            "optional": {"start_percent": START, "end_percent": END},
        }

    def apply(self, model, positive, negative, layer, blended, mode, weight, start_percent=0.0, end_percent=1.0):
        return _condition_patch(model, positive, negative, [layer, blended], mode_named(mode, DIFF_MODES), weight,
                                start_percent, end_percent)


def _condition_patch(model, positive, negative, latents, mode, weight, start_percent, end_percent):
    host_patches.check_mode_fits(model, mode)
    samples = [latent["samples"] for latent in latents]
    if len({tuple(s.shape[-2:]) for s in samples}) > 1:
        raise ValueError("The given latents differ in size; encode the layer and the blended image at the same "
                         "(generated) size.")
    patched = host_patches.apply_weight_deltas(model, mode, weight, 4 * len(samples), start_percent, end_percent)
    return (patched, host_patches.with_condition_latents(positive, model, samples),
            host_patches.with_condition_latents(negative, model, samples))
