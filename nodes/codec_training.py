"""The node that trains a latent transparency codec for any host VAE (LayerDiffusion's first training stage)."""

from __future__ import annotations

import os

import torch

from ..common import host as common_host
from ..common.loss_plot import loss_plot
from ..layer_model import host, host_vae
from ..layer_model.alpha import preview_on_checkerboard
from ..layer_model.codec_training import TERMS, CodecTrainConfig
from ..layer_model.latent_spaces import LATENT_FORMAT_CHOICES
from ..layer_model.rgba_dataset import RGBAFolder
from ..layer_model.train_codec import train_codec

CATEGORY = "layer_diffuse"  # with the other Layer Diffuse nodes (the edge-predictor trainer sits with sketch guidance)
LATENT_FORMATS = list(LATENT_FORMAT_CHOICES)


class LayerDiffuseTrainTransparentVAE:
    DESCRIPTION = ("Trains a latent transparency codec (the offset encoder and the transparent decoder) for the "
                   "connected VAE from a folder of transparent images, as the LayerDiffusion paper trains its own: "
                   "reconstruction, identity and PatchGAN losses. Works for SD1.5, SDXL, FLUX.1, SD3, FLUX.2 and "
                   "Qwen-Image latents. Saves to models/layer_model; the same save name and settings again resume "
                   "a stopped run.")
    CATEGORY = CATEGORY
    FUNCTION = "train"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING", "IMAGE", "IMAGE", "STRING")
    RETURN_NAMES = ("codec_name", "preview", "loss_plot", "report")
    OUTPUT_TOOLTIPS = ("The codec file's name in models/layer_model (choose it as the codec of Decode and Encode).",
                       "Held-out images decoded by the codec, over a checkerboard (empty when too few images to "
                       "hold any out).",
                       "Each loss term per step, log scale.",
                       "Where the file went, the losses, the held-out alpha error against a constant guess, and "
                       "harmlessness (PSNR of the VAE's decode with and without the offset).")

    @classmethod
    def INPUT_TYPES(cls):
        defaults = CodecTrainConfig()
        return {"required": {
            "vae": ("VAE", {"tooltip": "The VAE whose latents the codec will carry alpha in (kept frozen)."}),
            "image_folder": ("STRING", {"default": "", "tooltip": "Full path of a folder of transparent images (PNG, "
                                                                  "WebP, TIFF with alpha). Opaque ones are skipped."}),
            "steps": ("INT", {"default": defaults.steps, "min": 1, "max": 1000000, "tooltip": "Optimiser steps."}),
            "batch_size": ("INT", {"default": defaults.batch_size, "min": 1, "max": 256,
                                   "tooltip": "Images per step."}),
            "learning_rate": ("FLOAT", {"default": defaults.learning_rate, "min": 1e-7, "max": 0.1, "step": 1e-6,
                                        "tooltip": "AdamW learning rate: 1e-4 from scratch, 1e-5 to fine-tune."}),
            "resolution": ("INT", {"default": 512, "min": 64, "max": 2048, "step": 64,
                                   "tooltip": "Training crop size (images are scaled so the short side fits, then "
                                              "cropped at random)."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1, "control_after_generate": False,
                             "tooltip": "Same seed, same result; keep it to resume a stopped run."}),
            "save_name": ("STRING", {"default": "my_transparent_vae",
                                     "tooltip": "Saved as models/layer_model/<save_name>.safetensors."}),
        }, "optional": {
            "init": (["none", "published"], {"default": "none", "tooltip": "'published' fine-tunes the published "
                                                                         "codec of the latent space (SD1.5, SDXL, "
                                                                         "FLUX.1 only)."}),
            "latent_format": (LATENT_FORMATS, {"default": "auto", "tooltip": "The VAE's latent space. 'auto' reads "
                                                                             "it from the VAE where it can: SD1.5 and "
                                                                             "SDXL VAEs look alike, as do FLUX.1's "
                                                                             "and SD3's, so choose for those."}),
            "discriminator_weight": ("FLOAT", {"default": defaults.discriminator_weight, "min": 0.0, "max": 1.0,
                                               "step": 0.001, "tooltip": "The PatchGAN loss's weight (paper: "
                                                                         "0.01; 0 trains without it)."}),
            "discriminator_start": ("INT", {"default": defaults.discriminator_start, "min": 0, "max": 10**7,
                                            "tooltip": "Steps of reconstruction alone before the PatchGAN loss "
                                                       "joins: from the first step it slows the codec's learning "
                                                       "of alpha, and can overpower it."}),
            "offset_budget": ("FLOAT", {"default": defaults.offset_budget, "min": 0.01, "max": 1e6, "step": 0.01,
                                        "tooltip": "How far the offset may move the latent, in units of the "
                                                   "latent's own spread, before a penalty holds it back: latents "
                                                   "a diffusion model can learn to make. A VAE that answers the "
                                                   "offset stays inside it through the identity loss."}),
            "decoder_width": ("FLOAT", {"default": 1.0, "min": 0.05, "max": 1.0, "step": 0.05,
                                        "tooltip": "The transparent decoder's width against the published one "
                                                   "(104 M parameters): smaller trains and decodes faster."}),
        }, "hidden": {"unique_id": "UNIQUE_ID"}}

    def train(self, vae, image_folder, steps, batch_size, learning_rate, resolution, seed, save_name, init="none",
              latent_format="auto", discriminator_weight=0.01, discriminator_start=1000, decoder_width=1.0,
              offset_budget=1.0, unique_id=None):
        output = host.codec_output_path(save_name)
        dataset = RGBAFolder(image_folder.strip(), resolution)  # refuses empty folders before any work
        space = host_vae.place_vae(vae, latent_format)
        config = CodecTrainConfig(steps, batch_size, learning_rate, seed, init,
                                  discriminator_weight=discriminator_weight, discriminator_start=discriminator_start,
                                  offset_budget=offset_budget)
        layout, initial = host.codec_start(space.name, space.label, space.channels, space.downscale, init,
                                           decoder_width)
        bar = common_host.progress_bar(steps)
        frozen = host_vae.HostVAE(vae, space)

        def on_step(step: int, total: int, loss: float) -> None:
            bar.update_absolute(step, total)
            common_host.progress_text(f"step {step}/{total}: loss {loss:.4f}", unique_id)

        with torch.inference_mode(False):
            report = train_codec(frozen, frozen.signature, space.name, dataset, config, output, layout,
                                 initial=initial, on_step=on_step)
        series = {term: [t[term] for t in report.terms] for term in TERMS if any(t[term] for t in report.terms)}
        return (os.path.basename(output), _preview(report), loss_plot(series), _summary(report, dataset, output))


def _preview(report) -> torch.Tensor:
    if report.validation is None:
        return torch.zeros(1, 64, 64, 3)
    rgba = report.validation.previews
    return preview_on_checkerboard(rgba[:, :3], rgba[:, 3:]).movedim(1, -1).to(common_host.intermediate_device())


def _summary(report, dataset: RGBAFolder, output: str) -> str:
    terms = ", ".join(f"{name} {value:.4f}" for name, value in report.recent().items())
    lines = [f"Saved {output}", dataset.scan.summary() + f", {len(dataset.validation)} held out",
             f"last steps: {terms}"]
    if report.run.resumed_from:
        lines.append(f"resumed from step {report.run.resumed_from}")
    if report.validation:
        v = report.validation
        lines.append(f"held out: alpha error {v.alpha_error:.4f} (a constant guess: {v.constant_alpha_error:.4f}); "
                     f"harmlessness {v.harmlessness_psnr:.1f} dB PSNR (the VAE's own reconstruction: "
                     f"{v.vae_psnr:.1f} dB); offset {v.offset_ratio:.2f} of the latent's spread")
    return "\n".join(lines)
