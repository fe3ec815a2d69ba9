"""Nodes for RGBA VAEs (AlphaVAE for FLUX.1, flux2-klein-alpha's for FLUX.2): load one as the host's VAE, decode
to RGBA with a MASK, encode RGBA for img2img and FLUX.2 reference images, and apply their LoRAs to the model."""

from __future__ import annotations

import torch

from ..common import host as common_host
from ..layer_model import host_rgba_lora, host_rgba_vae
from ..layer_model.alpha import lift_alpha, preview_on_checkerboard, split_alpha
from .layer_diffuse import END, MODEL_OUT_TOOLTIP, START
from .transparency import MASK_OUTPUT_TOOLTIP, PREVIEW_OUTPUT_TOOLTIP, RGBA_RETURN_NAMES, RGBA_RETURN_TYPES

CATEGORY = "layer_diffuse"


class LayerDiffuseLoadRGBAVAE:
    DESCRIPTION = ("Loads an RGBA VAE (4 image channels: AlphaVAE for FLUX.1, flux2-klein-alpha's for FLUX.2) as "
                   "the host's own VAE, in diffusers' or ComfyUI's key layout. VAE Decode gives RGBA images with it; "
                   "Layer Diffuse RGBA VAE Decode adds the MASK and a preview.")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = ("VAE",)
    OUTPUT_TOOLTIPS = ("The RGBA VAE, run by the host like any VAE (memory estimates, device moves).",)

    @classmethod
    def INPUT_TYPES(cls):
        choices = host_rgba_vae.rgba_vae_choices()  # the published files first, always listed
        return {"required": {"vae_name": (choices, {
            "default": choices[0],
            "tooltip": "alphavae_flux1_rgba_vae / flux2_klein_alpha_rgba_vae: the published files (downloaded into "
                       "models/layer_model when missing; also found in models/vae). Or an RGBA VAE file in "
                       "models/vae; RGB VAEs are refused (load those with Load VAE)."})}}

    def load(self, vae_name):
        return (host_rgba_vae.load_rgba_vae(host_rgba_vae.rgba_vae_path(vae_name)),)


class LayerDiffuseRGBAVAEDecode:
    DESCRIPTION = ("Decodes a latent with an RGBA VAE into a transparent image, its transparency as a MASK, and a "
                   "preview over a checkerboard (the outputs of Layer Diffuse Decode).")
    CATEGORY = CATEGORY
    FUNCTION = "decode"
    RETURN_TYPES, RETURN_NAMES = RGBA_RETURN_TYPES, RGBA_RETURN_NAMES
    OUTPUT_TOOLTIPS = (
        "RGBA image (4 channels, straight colour). Save Image writes a transparent PNG; Layer Diffuse Composite and "
        "the Save Layers nodes take it as a layer.",
        MASK_OUTPUT_TOOLTIP,
        PREVIEW_OUTPUT_TOOLTIP,
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "samples": ("LATENT", {"tooltip": "A latent of the model this VAE belongs to (AlphaVAE: FLUX.1 with its "
                                              "LoRA; flux2-klein-alpha: FLUX.2 Klein with its LoRAs)."}),
            "vae": ("VAE", {"tooltip": "An RGBA VAE: Layer Diffuse Load RGBA VAE's output, or another VAE with 4 "
                                       "image channels (the host's Qwen-Image-Layered VAE)."}),
        }}

    def decode(self, samples, vae):
        rgba = host_rgba_vae.decode_rgba(vae, samples["samples"]).to(common_host.intermediate_device())
        chw = rgba.movedim(-1, 1)
        preview = preview_on_checkerboard(chw[:, :3], chw[:, 3:]).movedim(1, -1)
        return rgba, 1.0 - rgba[..., 3], preview


class LayerDiffuseRGBAVAEEncode:
    DESCRIPTION = ("Encodes a transparent image with an RGBA VAE: the latent for transparent img2img, or for FLUX.2's "
                   "ReferenceLatent (flux2-klein-alpha's extraction and removal take their reference images this way).")
    CATEGORY = CATEGORY
    FUNCTION = "encode"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The latent; sides are cropped to the VAE's scale (8 px FLUX.1, 16 px FLUX.2) as VAE Encode "
                       "crops them.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "An RGBA image (4 channels), or an RGB image: with the mask input, or "
                                               "alone as an opaque picture (a reference image without alpha)."}),
                "vae": ("VAE", {"tooltip": "An RGBA VAE (Layer Diffuse Load RGBA VAE)."}),
            },
            "optional": {
                "mask": ("MASK", {"tooltip": "Transparency for an RGB image, as Load Image gives it: 1 where "
                                             "transparent. Overrides the image's own alpha."}),
                "masked_alpha": ("FLOAT", {
                    "default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01,
                    "tooltip": "The alpha encoded where the mask is 1 (without a mask: where the image is fully "
                               "transparent); alpha = 1 - mask x (1 - masked_alpha). 0 encodes the transparency as "
                               "it is. flux2-klein-alpha's Remove LoRA was trained with 0.5: the photo at alpha 0.5 "
                               "over the object to erase."}),
            },
        }

    def encode(self, image, vae, mask=None, masked_alpha=0.0):
        if mask is None and image.shape[-1] == 3:  # an opaque picture
            rgb, alpha = image, torch.ones_like(image[..., :1])
        else:
            rgb, alpha = split_alpha(image, mask)
        return ({"samples": host_rgba_vae.encode_rgba(vae, rgb, lift_alpha(alpha, masked_alpha))},)


class LayerDiffuseApplyRGBAVAELoRA:
    DESCRIPTION = ("Applies an RGBA VAE's LoRA to the model through the host's own LoRA patching, checking first that "
                   "every key of the file lands on a weight of the model (a file that only partly fits is refused, "
                   "counted). AlphaVAE's LoRA on FLUX.1-dev; flux2-klein-alpha's Extract/Remove LoRAs on FLUX.2 Klein "
                   "Base 4B/9B. Decode the result with Layer Diffuse RGBA VAE Decode and that RGBA VAE.")
    CATEGORY = CATEGORY
    FUNCTION = "apply"
    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = (MODEL_OUT_TOOLTIP,)

    @classmethod
    def INPUT_TYPES(cls):
        choices = host_rgba_lora.rgba_vae_lora_choices()  # the published files first, always listed
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The model the LoRA was trained on (Load Diffusion Model): FLUX.1-dev "
                                               "for AlphaVAE's, FLUX.2 Klein Base 4B or 9B for flux2-klein-alpha's."}),
                "lora_name": (choices, {
                    "default": choices[0],
                    "tooltip": "alphavae_flux1_lora (FLUX.1-dev): text to RGBA with AlphaVAE's VAE. "
                               "flux2_klein_alpha_extract_4b/_9b (FLUX.2 Klein Base 4B/9B): cut an object out as "
                               "RGBA, given the picture and a background plate (the same picture without it) as "
                               "reference images encoded with Layer Diffuse RGBA VAE Encode; its authors use the "
                               "prompt 'Foreground', CFG 4, 6 steps. flux2_klein_alpha_remove_9b (Klein Base 9B): "
                               "erase an object and fill in the background, given the photo as the reference "
                               "image encoded at alpha 0.5 over the object (masked_alpha); its authors use 30 "
                               "steps, CFG 4. Published files download into "
                               "models/layer_model when missing (also found in models/loras); other files of "
                               "models/loras are listed too. Licences: AlphaVAE's none stated, Extract-4B Apache-2.0, "
                               "the 9B ones FLUX Non-Commercial."}),
                "strength": ("FLOAT", {"default": 1.0, "min": -1.0, "max": 3.0, "step": 0.01,
                                       "tooltip": "1 is as published (the authors' scale); 0 leaves the model as it "
                                                  "was."}),
            },
            "optional": {"start_percent": START, "end_percent": END},
        }

    def apply(self, model, lora_name, strength, start_percent=0.0, end_percent=1.0):
        return (host_rgba_lora.apply_rgba_vae_lora(model, lora_name, strength, start_percent, end_percent),)
