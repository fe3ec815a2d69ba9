"""Transparent training images: a folder of RGBA pictures, each read with its own random crop and flip.

Images without an alpha channel, or whose alpha is opaque everywhere, teach the codec nothing about
transparency: they are skipped, counted and reported. A few images are held out for validation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from ._common import training

RGBA_EXTENSIONS = (".png", ".webp", ".tif", ".tiff")
OPAQUE = 254  # 8-bit alpha at or above this everywhere counts as opaque (no transparency to learn)


class RGBADatasetError(ValueError):
    pass


@dataclass(frozen=True)
class FolderScan:
    """What a folder holds: the usable transparent images and what was left out, by reason."""

    usable: tuple[str, ...]
    no_alpha: tuple[str, ...]
    opaque: tuple[str, ...]
    unreadable: tuple[str, ...]

    def summary(self) -> str:
        skipped = [(len(self.no_alpha), "without an alpha channel"), (len(self.opaque), "fully opaque"),
                   (len(self.unreadable), "unreadable")]
        left_out = ", ".join(f"{count} {why}" for count, why in skipped if count)
        return f"{len(self.usable)} transparent images" + (f"; skipped {left_out}" if left_out else "")


def scan_folder(folder: str) -> FolderScan:
    """Sort the images of `folder` (not its subfolders) into usable and skipped ones."""
    if not os.path.isdir(folder):
        raise RGBADatasetError(f"The image folder {folder!r} does not exist: give a folder of transparent images "
                               f"({', '.join(RGBA_EXTENSIONS)}).")
    paths = sorted(os.path.join(folder, name) for name in os.listdir(folder)
                   if name.lower().endswith(RGBA_EXTENSIONS))
    sorted_paths: dict[str, list[str]] = {"usable": [], "no_alpha": [], "opaque": [], "unreadable": []}
    for path in paths:
        sorted_paths[_kind_of(path)].append(path)
    return FolderScan(**{kind: tuple(found) for kind, found in sorted_paths.items()})


def _kind_of(path: str) -> str:
    try:
        with Image.open(path) as image:
            if "A" not in image.getbands() and "transparency" not in image.info:
                return "no_alpha"
            alpha = np.asarray(image.convert("RGBA").getchannel("A"))
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError):
        return "unreadable"
    return "usable" if int(alpha.min()) < OPAQUE else "opaque"


def held_out_count(usable: int) -> int:
    """Images kept out of training to measure the codec on: a tenth, 1 to 16, none below 4 images."""
    return 0 if usable < 4 else max(1, min(16, usable // 10))


class RGBAFolder:
    """The transparent images of a folder, split into training and held-out images (every k-th by name).

    `crop(index, generator)` gives a training image at `resolution` with a random crop and flip drawn from
    `generator`; `centre(index)` the same image centre-cropped, for validation.
    """

    def __init__(self, folder: str, resolution: int, multiple: int = 64) -> None:
        if resolution < multiple or resolution % multiple:
            raise RGBADatasetError(f"The training resolution must be a multiple of {multiple} px (the transparent "
                                   f"decoder's padding), got {resolution}.")
        self.folder, self.resolution = folder, resolution
        self.scan = scan_folder(folder)
        usable = self.scan.usable
        if not usable:
            raise RGBADatasetError(f"The folder {folder!r} holds no usable transparent image ({self.scan.summary()}"
                                   "). The codec learns from images whose alpha channel has transparent pixels: "
                                   "PNG, WebP or TIFF with alpha.")
        held = held_out_count(len(usable))
        every = len(usable) // held if held else 0
        self.validation = tuple(usable[every - 1::every][:held]) if held else ()
        self.paths = tuple(path for path in usable if path not in self.validation)

    def __len__(self) -> int:
        return len(self.paths)

    def crop(self, index: int, generator: torch.Generator) -> torch.Tensor:
        """Training image `index` as straight RGBA [1,4,R,R] in [0,1], randomly cropped and flipped."""
        image = _load_scaled(self.paths[index], self.resolution)
        h, w = image.shape[-2:]
        top = int(torch.randint(h - self.resolution + 1, (1,), generator=generator))
        left = int(torch.randint(w - self.resolution + 1, (1,), generator=generator))
        image = image[..., top:top + self.resolution, left:left + self.resolution]
        if bool(torch.rand(1, generator=generator) < 0.5):
            image = torch.flip(image, dims=(-1,))
        return image

    def centre(self, path: str) -> torch.Tensor:
        """A held-out image as straight RGBA [1,4,R,R], centre-cropped."""
        return load_centred(path, self.resolution)

    def contents(self) -> str:
        """Names, sizes and resolution: alike on every machine holding a copy of the folder."""
        return training.fingerprint.files_digest(self.scan.usable, str(self.resolution), with_times=False)

    def fingerprint(self) -> str:
        """Changes when a file is added, removed or replaced: decides whether a saved run may resume."""
        return training.fingerprint.files_digest(self.scan.usable, str(self.resolution), with_times=True)


def load_rgba(path: str) -> torch.Tensor:
    """The image as straight RGBA [1,4,H,W] in [0,1], at its own size."""
    with Image.open(path) as image:
        array = np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1)[None].contiguous()


def load_centred(path: str, resolution: int) -> torch.Tensor:
    """Straight RGBA [1,4,R,R]: the short side scaled to `resolution`, the long side centre-cropped to it."""
    image = _load_scaled(path, resolution)
    h, w = image.shape[-2:]
    top, left = (h - resolution) // 2, (w - resolution) // 2
    return image[..., top:top + resolution, left:left + resolution]


def _load_scaled(path: str, resolution: int) -> torch.Tensor:
    """Straight RGBA [1,4,H,W] with the short side scaled to `resolution` (premultiplied while resampling, so
    the colour of invisible pixels does not bleed into visible ones)."""
    rgba = load_rgba(path)
    h, w = rgba.shape[-2:]
    if min(h, w) == resolution:
        return rgba
    size = (max(resolution, round(h * resolution / min(h, w))), max(resolution, round(w * resolution / min(h, w))))
    alpha = rgba[:, 3:]
    premultiplied = torch.cat([rgba[:, :3] * alpha, alpha], dim=1)
    scaled = F.interpolate(premultiplied, size=size, mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
    alpha = scaled[:, 3:]
    rgb = torch.where(alpha > 1e-6, scaled[:, :3] / alpha.clamp_min(1e-6), torch.zeros_like(scaled[:, :3]))
    return torch.cat([rgb.clamp(0, 1), alpha], dim=1)
