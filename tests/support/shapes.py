"""Synthetic RGBA images: soft-edged ellipses and rectangles of random colour on transparency."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image


def random_rgba(batch: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """[B,4,H,W] in [0,1]: straight RGB with garbage colour under the transparent parts, and alpha."""
    ys, xs = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    images = []
    for _ in range(batch):
        alpha = torch.zeros(size, size)
        rgb = torch.rand(3, size, size, generator=generator)  # what lies under transparency must not matter
        for _ in range(int(torch.randint(1, 4, (1,), generator=generator))):
            cy, cx, ry, rx = (torch.rand(4, generator=generator) * torch.tensor([0.6, 0.6, 0.25, 0.25])
                              + torch.tensor([0.2, 0.2, 0.08, 0.08]))
            if torch.rand(1, generator=generator) < 0.5:
                distance = ((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2
            else:
                distance = torch.maximum(((ys - cy) / ry).abs(), ((xs - cx) / rx).abs()) ** 2
            shape = torch.sigmoid((1.0 - distance) * 12.0)
            colour = torch.rand(3, 1, 1, generator=generator)
            rgb = rgb * (1 - shape) + colour * shape
            alpha = torch.maximum(alpha, shape)
        images.append(torch.cat([rgb, alpha[None]]))
    return torch.stack(images)


def write_rgba_folder(folder, count: int, size: int, seed: int = 0, opaque: int = 0, without_alpha: int = 0):
    """PNG files of `count` random transparent shapes (plus `opaque` fully opaque RGBA files and `without_alpha`
    RGB files, which a codec trainer must skip) in `folder`; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    images = random_rgba(count + opaque + without_alpha, size, torch.Generator().manual_seed(seed))
    for index, image in enumerate(images):
        array = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        if index >= count + opaque:
            Image.fromarray(array[..., :3], "RGB").save(folder / f"rgb_{index:03d}.png")
        else:
            if index >= count:
                array[..., 3] = 255
            Image.fromarray(array, "RGBA").save(folder / f"shape_{index:03d}.png")
    return folder


def disc_mask(size: int) -> np.ndarray:
    """A centred disc, 0.3 of the side in radius: 1 inside, 0 outside [size,size]."""
    yy, xx = np.mgrid[:size, :size] + 0.5
    return (((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (0.3 * size) ** 2).astype(np.float32)


def write_discs(folder: Path, count: int, size: int, caption: str, brightest: int = 255) -> Path:
    """`count` transparent PNGs of the same centred disc in different colours (channels up to `brightest`), each
    captioned `caption`: a training set whose alpha is one known mask."""
    folder.mkdir(parents=True)
    colours = np.random.default_rng(0).integers(0, brightest + 1, (count, 3))
    for index, colour in enumerate(colours):
        rgba = np.zeros((size, size, 4), np.uint8)
        rgba[..., :3], rgba[..., 3] = colour, disc_mask(size) * 255
        Image.fromarray(rgba, "RGBA").save(folder / f"disc_{index}.png")
        (folder / f"disc_{index}.txt").write_text(caption, encoding="utf-8")
    return folder
