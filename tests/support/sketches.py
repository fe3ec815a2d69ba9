"""Synthetic training images and sketches with known edges, and a real host CLIP for captions."""

from __future__ import annotations

from pathlib import Path

import comfy.sd
import numpy as np
import torch
from comfyui_layer_sketch.sketch_guidance import edges
from comfyui_layer_sketch.sketch_guidance.guidance import noise_level
from comfyui_layer_sketch.sketch_guidance.host import probe_features
from comfyui_layer_sketch.sketch_guidance.predictor import EdgePredictor
from PIL import Image

from . import fixtures
from .shapes import random_rgba

TRAIN_STEPS = 150  # the predictor the host tests train once per session for the narrow SD1.5 UNet


def shapes_on_colour(count: int, size: int, seed: int) -> torch.Tensor:
    """[count,3,size,size]: soft shapes of random colour over a flat random background."""
    generator = torch.Generator().manual_seed(seed)
    rgba = random_rgba(count, size, generator)
    background = torch.rand(count, 3, 1, 1, generator=generator)
    return rgba[:, :3] * rgba[:, 3:] + background * (1 - rgba[:, 3:])


def write_image_folder(folder: Path, count: int, size: int = 64, seed: int = 0,
                       caption: str | None = "a shape") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(shapes_on_colour(count, size, seed)):
        array = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(array).save(folder / f"{index:03d}.png")
        if caption is not None:
            (folder / f"{index:03d}.txt").write_text(caption)
    return folder


def drawn_sketch(seed: int, size: int = 64) -> torch.Tensor:
    """An IMAGE [1,size,size,3] as a user draws it: dark strokes (a shape's outline) on white paper."""
    outline = edges.photo_edges(shapes_on_colour(1, size, seed))
    return (1.0 - outline).expand(-1, 3, -1, -1).movedim(1, -1).contiguous()


def checkpoint_clip(cache: Path):
    """The real host CLIP-L of the cached random SD1.5 checkpoint (the UNet is not loaded)."""
    _, clip, _, _ = comfy.sd.load_checkpoint_guess_config(str(fixtures.sd15_checkpoint(cache)), output_vae=False,
                                                          output_clip=True, output_model=False)
    return clip


def predicted_edges(model, predictor: EdgePredictor, positive, x: torch.Tensor, sigma: float) -> torch.Tensor:
    """What the predictor reads from the UNet at noisy (model-space) `x` and `sigma`: [B,4,h,w] (how close a
    sample came to the sketch, as guidance sees it)."""
    features, x_in, denoised = probe_features(model, positive, x, sigma, torch.zeros_like(x), predictor.info.layers)
    sigmas = torch.full((x.shape[0],), sigma)
    with torch.no_grad():
        return predictor.to(features.device).eval()(features, noise_level(x_in, denoised, sigmas))
