"""Nodes for sketch-guided generation: load or train an edge predictor, apply guidance, preview edge maps."""

from __future__ import annotations

import os

import torch

from ..common import host as common_host
from ..sketch_guidance import edges, host
from ..sketch_guidance.dataset import ImageFolder
from ..sketch_guidance.features import LAYER_SETS
from ..sketch_guidance.guidance import DEFAULT_END_PERCENT, DEFAULT_STRENGTH, MAX_STRENGTH, check_strength
from ..sketch_guidance.train import TrainConfig, train_predictor

CATEGORY = "sketch_guidance"
PREDICTOR_TOOLTIP = "A latent edge predictor (from Sketch Guidance Load Predictor or Train Predictor)."


class SketchGuidanceLoadPredictor:
    DESCRIPTION = ("Loads a latent edge predictor from models/edge_predictor. Community .pt checkpoints put "
                   "there are converted to .safetensors on first use.")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = ("EDGE_PREDICTOR",)
    RETURN_NAMES = ("edge_predictor",)
    OUTPUT_TOOLTIPS = (PREDICTOR_TOOLTIP,)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"predictor_name": (host.predictor_names(), {
            "tooltip": "A file in models/edge_predictor, trained for your checkpoint's base model (SD1.5 or SDXL)."})}}

    def load(self, predictor_name):
        return (host.load_predictor_model(predictor_name),)


class SketchGuidanceApply:
    DESCRIPTION = ("Steers sampling toward a sketch: during the first part of sampling, the edge predictor reads "
                   "the UNet and each step is nudged so that the image's edges follow the sketch's strokes.")
    CATEGORY = CATEGORY
    FUNCTION = "apply"
    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("A copy of the model with sketch guidance attached; the model you connected is unchanged.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "An SD1.5 or SDXL model (Layer Diffuse patches and LoRAs may be applied)."}),
            "vae": ("VAE", {"tooltip": "The checkpoint's VAE: the sketch is encoded with it."}),
            "edge_predictor": ("EDGE_PREDICTOR", {"tooltip": PREDICTOR_TOOLTIP}),
            "sketch": ("IMAGE", {"tooltip": "Your drawing: dark lines on light paper, light on dark, or strokes on "
                                            "transparency. Best at the size you generate (otherwise it is "
                                            "resized, and stretched if the aspect ratio differs)."}),
            "strength": ("FLOAT", {"default": DEFAULT_STRENGTH, "min": 0.0, "max": MAX_STRENGTH, "step": 0.05,
                                   "tooltip": "How hard each guided step pulls toward the sketch, relative to the "
                                              "sampler's own step (the paper's beta, 1.6). Higher follows the sketch "
                                              "more closely, at some cost in realism; 0 turns guidance off."}),
            "end_percent": ("FLOAT", {"default": DEFAULT_END_PERCENT, "min": 0.0, "max": 1.0, "step": 0.01,
                                      "tooltip": "Guide the first part of sampling only (the paper: 0.5). Later "
                                                 "guidance costs detail."}),
        }}

    def apply(self, model, vae, edge_predictor, sketch, strength, end_percent):
        check_strength(strength)
        host.check_fits(edge_predictor.model, model)  # before the sketch is encoded
        target = host.sketch_target(vae, model, sketch)
        return (host.apply_guidance(model, edge_predictor, target, strength, end_percent),)


class SketchToEdgeMap:
    DESCRIPTION = ("Shows the edge map guidance aims at (white strokes on black): a normalised drawing, or the "
                   "Canny edges of a photo as used for training.")
    CATEGORY = CATEGORY
    FUNCTION = "edge_map"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("edge_map",)
    OUTPUT_TOOLTIPS = ("White strokes on black, 3 channels, the input's size.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": ("IMAGE", {"tooltip": "A drawing, or a photo to take edges from."}),
            "source": (["sketch", "photo"], {"default": "sketch", "tooltip": "'sketch' normalises a drawing (what "
                                                                            "Sketch Guidance Apply does); 'photo' "
                                                                            "finds Canny edges (training targets)."}),
        }}

    def edge_map(self, image, source):
        pixels = image.movedim(-1, 1)
        strokes = edges.sketch_edges(pixels) if source == "sketch" else edges.photo_edges(pixels)
        return (edges.as_rgb(strokes).movedim(1, -1).to(common_host.intermediate_device()),)


class SketchGuidanceTrainPredictor:
    DESCRIPTION = ("Trains a latent edge predictor for this model from a folder of images (Canny edges as targets, "
                   "NAME.txt beside an image as its caption) and saves it to models/edge_predictor. The paper's "
                   "recipe: batch 16, 3000 steps. A stopped run resumes where it was saved.")
    CATEGORY = CATEGORY
    FUNCTION = "train"
    OUTPUT_NODE = True
    RETURN_TYPES = ("EDGE_PREDICTOR", "STRING")
    RETURN_NAMES = ("edge_predictor", "report")
    OUTPUT_TOOLTIPS = (PREDICTOR_TOOLTIP, "Where the file was saved and how the loss fell.")

    @classmethod
    def INPUT_TYPES(cls):
        defaults = TrainConfig()
        return {"required": {
            "model": ("MODEL", {"tooltip": "The model the predictor will guide (SD1.5 or SDXL)."}),
            "vae": ("VAE", {"tooltip": "The checkpoint's VAE (encodes images and edge maps)."}),
            "clip": ("CLIP", {"tooltip": "The checkpoint's text encoder (encodes the captions)."}),
            "image_folder": ("STRING", {"default": "", "tooltip": "Full path of a folder of training images "
                                                                  "(png, jpg, webp)."}),
            "steps": ("INT", {"default": defaults.steps, "min": 1, "max": 100000,
                              "tooltip": "Optimiser steps (the paper: 3000)."}),
            "batch_size": ("INT", {"default": defaults.batch_size, "min": 1, "max": 256,
                                   "tooltip": "Images per step (the paper: 16)."}),
            "learning_rate": ("FLOAT", {"default": defaults.learning_rate, "min": 1e-6, "max": 0.1, "step": 1e-5,
                                        "tooltip": "Adam learning rate."}),
            "file_name": ("STRING", {"default": "my_edge_predictor", "tooltip": "Saved as models/edge_predictor/"
                                                                               "<file_name>.safetensors."}),
        }, "optional": {
            "resolution": ("INT", {"default": 512, "min": 64, "max": 2048, "step": 8,
                                   "tooltip": "Training image size (square; images are centre-cropped)."}),
            "layer_set": (list(LAYER_SETS), {"default": "paper", "tooltip": "UNet layers the predictor reads."}),
            # No 'randomize after run' control (the editor adds one to any "seed" unless told not to): a
            # changed seed would make a re-queued training start over instead of resuming.
            "seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1, "control_after_generate": False,
                             "tooltip": "Same seed, same result; keep it to resume an interrupted training."}),
        }}

    def train(self, model, vae, clip, image_folder, steps, batch_size, learning_rate, file_name, resolution=512,
              layer_set="paper", seed=0):
        output = host.predictor_output_path(file_name)
        dataset = ImageFolder(image_folder.strip(), resolution)  # refuses empty folders and broken images
        config = TrainConfig(steps, batch_size, learning_rate, seed)
        bar = common_host.progress_bar(steps)
        with torch.inference_mode(False):
            source = host.HostFeatureSource(model, vae, clip, layer_set)
            report = train_predictor(source, dataset, config, output, lambda step, total, loss: bar.update_absolute(
                step, total))
        first, last = report.losses[: max(1, steps // 10)], report.losses[-max(1, steps // 10):]
        summary = (f"Saved {output}: {len(dataset)} images, {steps} steps, loss {sum(first) / len(first):.4f} "
                   f"-> {sum(last) / len(last):.4f}")
        return (host.load_predictor_model(os.path.basename(output)), summary)
