"""Training images for the edge predictor: a folder of pictures, optional captions, Canny edge targets."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ._common import training
from .edges import photo_edges

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


class DatasetError(ValueError):
    pass


@dataclass(frozen=True)
class TrainingImage:
    pixels: torch.Tensor  # [1,3,R,R] in [0,1]
    edges: torch.Tensor  # [1,1,R,R], 1 on edges
    caption: str


class ImageFolder:
    """Images in `folder` (not its subfolders), each with an optional caption in a same-named .txt file.

    Every image is opened once up front, so a broken file is reported before any training starts.
    Images are centre-cropped to a square and resized to `resolution`.
    """

    def __init__(self, folder: str, resolution: int = 512) -> None:
        if resolution % 8:
            raise DatasetError(f"The training resolution must be a multiple of 8, got {resolution}.")
        if not os.path.isdir(folder):
            raise DatasetError(f"The image folder {folder!r} does not exist; give the path of a folder of "
                               "training images (png, jpg, webp).")
        self.folder, self.resolution = folder, resolution
        self.paths = sorted(os.path.join(folder, name) for name in os.listdir(folder)
                            if name.lower().endswith(IMAGE_EXTENSIONS))
        if not self.paths:
            raise DatasetError(f"The image folder {folder!r} holds no images ({', '.join(IMAGE_EXTENSIONS)}).")
        unreadable = [path for path in self.paths if not _readable(path)]
        if unreadable:
            names = ", ".join(os.path.basename(p) for p in unreadable[:5])
            raise DatasetError(f"{len(unreadable)} of the {len(self.paths)} images in {folder!r} cannot be read "
                               f"({names}); remove or replace them.")

    def __len__(self) -> int:
        return len(self.paths)

    def caption(self, index: int) -> str:
        caption_path = os.path.splitext(self.paths[index])[0] + ".txt"
        if os.path.exists(caption_path):
            with open(caption_path, encoding="utf-8") as handle:
                return handle.read().strip()
        return ""

    def __getitem__(self, index: int) -> TrainingImage:
        with Image.open(self.paths[index]) as image:
            pixels = _square(image.convert("RGB"), self.resolution)
        return TrainingImage(pixels, photo_edges(pixels), self.caption(index))

    def contents(self) -> str:
        """The files' names and sizes and the resolution: what every process of a run must see alike (unlike
        the fingerprint, it does not change when the folder is copied to another machine)."""
        return training.fingerprint.files_digest(self.paths, str(self.resolution), with_times=False)

    def fingerprint(self) -> str:
        """Changes when files are added, removed or modified (decides whether a saved run may resume)."""
        return training.fingerprint.files_digest(self.paths, str(self.resolution), with_times=True)


def _readable(path: str) -> bool:
    try:
        with Image.open(path) as image:
            image.verify()
        return True
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError):
        return False


def _square(image: Image.Image, size: int) -> torch.Tensor:
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    image = image.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.LANCZOS)
    array = np.asarray(image, dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1)[None].contiguous()
