"""The node that turns transparent images into the training set of the host's Train LoRA (LayerDiffusion's second
training stage: the model learns to make latents that carry alpha)."""

from __future__ import annotations

import logging
import time

from ..common import families
from ..common import host as common_host
from ..layer_model import host
from ..layer_model.codec_choice import PUBLISHED
from ..layer_model.lora_dataset import (
    DEFAULT_CAPTION,
    OWN_SIZE,
    RESOLUTION_MULTIPLE,
    captioned_folder,
    check_resolution,
    encode_images,
)
from .transparency import codec_input

CATEGORY = "layer_diffuse"


class LayerDiffuseRGBATrainingDataset:
    DESCRIPTION = ("Encodes a folder of transparent images and their captions into the training set of the host's "
                   "Train LoRA: each image becomes the latent Layer Diffuse Encode makes (the transparency offset "
                   "added by the codec), each caption its conditioning. A LoRA trained on it teaches the model to "
                   "generate transparency, for models without a published LayerDiffusion LoRA (Z-Image, Lumina 2, "
                   "Chroma, HiDream, SDXL fine-tunes, or any latent space a trained codec covers).")
    CATEGORY = CATEGORY
    FUNCTION = "make"
    RETURN_TYPES = ("LATENT", "CONDITIONING", "STRING")
    RETURN_NAMES = ("latents", "conditioning", "report")
    OUTPUT_IS_LIST = (True, True, False)
    OUTPUT_TOOLTIPS = (
        "One transparent latent per image, as a list: connect to Train LoRA's latents (or through Resolution Bucket "
        "where the host has it).",
        "One conditioning per image, in the same order: connect to Train LoRA's positive.",
        "How many images were encoded, skipped (no alpha, opaque, unreadable) and given the default caption.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image_folder": ("STRING", {"default": "", "tooltip": (
                    "Full path of a folder of transparent images (PNG, WebP, TIFF with alpha), each with its caption "
                    "in a .txt file of the same name (name.png, name.txt). Images without alpha or fully opaque are "
                    "skipped and counted.")}),
                "model": ("MODEL", {"tooltip": "The model the LoRA is trained for (the one connected to Train LoRA): "
                                               "its latent space picks the published codec and checks a trained one."}),
                "vae": ("VAE", {"tooltip": "That model's VAE (FLUX.1's ae.safetensors for Z-Image, Lumina 2, Chroma "
                                           "and HiDream)."}),
                "clip": ("CLIP", {"tooltip": "That model's text encoder, for the captions."}),
                "codec": codec_input(),
                "resolution": ("INT", {"default": 512, "min": OWN_SIZE, "max": 4096, "step": RESOLUTION_MULTIPLE,
                                       "tooltip": "Each image's short side is scaled to this and the long side "
                                                  "centre-cropped to it (a square). 0 keeps each image's own size "
                                                  "(cropped to the VAE's multiple): mixed sizes then train one at a "
                                                  "time, or group them with Resolution Bucket."}),
                "default_caption": ("STRING", {"default": DEFAULT_CAPTION, "tooltip": (
                    "The caption of images without a .txt file. Empty (the default) as the host's dataset loaders "
                    "do: those images train unconditioned. The report says which images got it.")}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def make(self, image_folder, model, vae, clip, codec=PUBLISHED, resolution=512, default_caption=DEFAULT_CAPTION,
             unique_id=None):
        check_resolution(resolution)
        chosen = host.encode_codec(codec, families.AUTO, model, vae)  # refusals before any weight or image loads
        folder = captioned_folder(image_folder.strip(), default_caption)
        bar = common_host.progress_bar(len(folder.images))
        start = time.perf_counter()
        latents, conditioning = encode_images(
            folder.images, resolution,
            lambda rgba: host.encode_transparent(vae, rgba[:, :3].movedim(1, -1), rgba[:, 3:].movedim(1, -1), chosen),
            lambda caption: common_host.encode_prompt(clip, caption), bar.update)
        shapes = sorted({tuple(latent.shape[1:]) for latent in latents})
        report = (f"{len(latents)} latents with {chosen.describe()} in {time.perf_counter() - start:.1f} s "
                  f"(shapes {', '.join(str(list(s)) for s in shapes)})\n{folder.summary()}")
        logging.info("Layer Diffuse RGBA training dataset: %s", report.replace("\n", "; "))
        if folder.without_caption:
            logging.warning("Layer Diffuse RGBA training dataset: %s", folder.summary().splitlines()[-1])
        common_host.progress_text(report, unique_id)
        return ([{"samples": latent} for latent in latents], conditioning, report)
