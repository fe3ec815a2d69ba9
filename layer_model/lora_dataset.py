"""Transparent images with captions, turned into the training set of the host's LoRA trainer (the method's second
stage: the diffusion model learns to make the latents the transparency encoder makes).

Plain torch. A folder holds `name.png` (or WebP, TIFF) with alpha and, beside it, `name.txt` with its caption, as
the host's dataset loaders read captions. Images without alpha, or opaque everywhere, teach no transparency: they
are skipped and counted (`rgba_dataset.scan_folder`). An image without a caption file gets the default caption.
The encoding itself (codec, VAE, text encoder) is the host's and is passed in.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch

from .rgba_dataset import RGBA_EXTENSIONS, FolderScan, RGBADatasetError, load_centred, load_rgba, scan_folder

CAPTION_EXTENSION = ".txt"
# What an image without a caption file is trained with: empty, as the host's dataset loaders do (those images
# teach transparency unconditioned). The node lets users set another.
DEFAULT_CAPTION = ""
OWN_SIZE = 0  # the resolution that keeps each image's own size
RESOLUTION_MULTIPLE = 16  # a scaled side fits every latent space's downscale (8, FLUX.2's 16) and 2x2 patches

Conditioning = TypeVar("Conditioning")


@dataclass(frozen=True)
class CaptionedImage:
    path: str
    caption: str
    has_caption_file: bool


@dataclass(frozen=True)
class CaptionedFolder:
    """The transparent images of a folder with their captions, and what was left out."""

    scan: FolderScan
    images: tuple[CaptionedImage, ...]
    default_caption: str

    @property
    def without_caption(self) -> tuple[str, ...]:
        return tuple(os.path.basename(image.path) for image in self.images if not image.has_caption_file)

    def summary(self) -> str:
        """What was read, skipped and defaulted, for the node's report and the log."""
        lines = [self.scan.summary()]
        missing = self.without_caption
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            lines.append(f"{len(missing)} without a caption file ({shown}): captioned {self.default_caption!r}, "
                         f"the default caption; put the caption in <name>{CAPTION_EXTENSION} beside each image")
        return "\n".join(lines)


def read_caption(image_path: str) -> str | None:
    """The caption in `name.txt` beside `name.png` (UTF-8, surrounding space stripped), or None without one."""
    path = os.path.splitext(image_path)[0] + CAPTION_EXTENSION
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as handle:
        return handle.read().strip()


def captioned_folder(folder: str, default_caption: str = DEFAULT_CAPTION) -> CaptionedFolder:
    """The folder's transparent images with their captions; refused when it holds none."""
    scan = scan_folder(folder)
    if not scan.usable:
        raise RGBADatasetError(
            f"The folder {folder!r} holds no transparent image to train on ({scan.summary()}). A transparency LoRA "
            f"learns from images whose alpha channel has transparent pixels: {', '.join(RGBA_EXTENSIONS)} files "
            f"with alpha, each with its caption in a {CAPTION_EXTENSION} file of the same name.")
    images = []
    for path in scan.usable:
        caption = read_caption(path)
        images.append(CaptionedImage(path, default_caption if caption is None else caption, caption is not None))
    return CaptionedFolder(scan, tuple(images), default_caption)


def check_resolution(resolution: int) -> None:
    if resolution != OWN_SIZE and (resolution < RESOLUTION_MULTIPLE or resolution % RESOLUTION_MULTIPLE):
        raise ValueError(f"The resolution must be a multiple of {RESOLUTION_MULTIPLE} px, or {OWN_SIZE} to keep "
                         f"each image's own size; got {resolution}.")


def load_training_image(path: str, resolution: int) -> torch.Tensor:
    """Straight RGBA [1,4,H,W] in [0,1]: scaled and centre-cropped to a `resolution` square, or at its own size
    (`OWN_SIZE`; the VAE's encode crops it to its multiple)."""
    return load_rgba(path) if resolution == OWN_SIZE else load_centred(path, resolution)


def encode_images(images: Sequence[CaptionedImage], resolution: int,
                  encode_image: Callable[[torch.Tensor], torch.Tensor],
                  encode_caption: Callable[[str], Conditioning],
                  progress: Callable[[int], None] | None = None) -> tuple[list[torch.Tensor], list[Conditioning]]:
    """(one latent per image, one conditioning per image), in the images' order: `encode_image` turns straight
    RGBA [1,4,H,W] into its transparent latent, `encode_caption` a caption into conditioning (each distinct
    caption is encoded once); `progress` is told of each image done."""
    check_resolution(resolution)
    encoded: dict[str, Conditioning] = {}
    latents, conditioning = [], []
    for image in images:
        latents.append(encode_image(load_training_image(image.path, resolution)))
        if image.caption not in encoded:
            encoded[image.caption] = encode_caption(image.caption)
        conditioning.append(encoded[image.caption])
        if progress is not None:
            progress(1)
    return latents, conditioning
