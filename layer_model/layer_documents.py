"""Layer stacks from what the host passes around, as `layered_files.Layer` lists ready to write (pure torch/PIL).

- An IMAGE batch where each image is one layer, as Qwen-Image-Layered's decode gives them (the host's template
  cuts the whole-image slot off first): RGBA (alpha in the 4th channel, 1 = opaque) or RGB, with an optional
  host MASK (1 = transparent) that, as in Layer Diffuse Encode, replaces the image's own alpha.
- The host's `LAYERS` document (ComfyUI 0.33: Add Layer, Layers From Bounding Boxes): {"version": 1, "canvas":
  (w, h) optional, "layers": [{"image", "mask", "name", "x", "y", "w", "h", "rotation" (radians), "opacity",
  "blend_mode", "visible", "flip_h", "flip_v", "z_index", "type": "raster"}]}. Read as the host's Create Layered
  Image reads it: items stable-sorted by z_index, a batch inside an item is consecutive layers, an item's mask
  multiplies the image's alpha, a missing canvas is the extent of the placed layers. Size, flips and rotation
  are baked into the layer's pixels (the files have no transforms); offsets, opacity, blend mode and
  visibility are kept as layer properties.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .alpha import split_alpha
from .layered_files import BLEND_MODES, Layer, check

Canvas = tuple[int, int]


def to_uint8(rgba: torch.Tensor) -> np.ndarray:
    """[H,W,4] floats in [0,1] as RGBA uint8."""
    return (rgba.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8).cpu().numpy()


def _names(given: str, count: int) -> list[str]:
    names = [name.strip() for name in given.split(",")] if given.strip() else []
    return [names[i] if i < len(names) and names[i] else f"layer {i + 1}" for i in range(count)]


def stacks_from_batch(images: torch.Tensor, mask: torch.Tensor | None, layer_names: str = "",
                      top_first: bool = False, per_file: int = 0) -> list[tuple[Canvas, list[Layer]]]:
    """Each image of the batch a full-canvas layer; `per_file` consecutive images make one file (0: the whole
    batch is one file). Returns (canvas, layers bottom first) per file."""
    count = images.shape[0]
    per_file = per_file or count
    if count % per_file:
        raise ValueError(f"The batch holds {count} images, not a multiple of layers_per_file ({per_file}). Set "
                         "layers_per_file to the number of layers in each stack, or 0 to save the batch as one file.")
    if images.shape[-1] not in (3, 4):
        raise ValueError(f"The images have {images.shape[-1]} channels; give RGBA (4) or RGB (3) images.")
    if mask is None and images.shape[-1] == 3:
        rgb, alpha = images, torch.ones_like(images[..., :1])
    else:
        rgb, alpha = split_alpha(images, mask)
    pixels = to_uint8(torch.cat([rgb, alpha], dim=-1))
    canvas = (images.shape[2], images.shape[1])
    stacks = []
    for start in range(0, count, per_file):
        group = list(pixels[start:start + per_file])
        if top_first:
            group.reverse()
        names = _names(layer_names, per_file)
        stacks.append((canvas, [Layer(array, name) for array, name in zip(group, names, strict=True)]))
    return stacks


def _number(value, default: float) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else default


def _items(document) -> list[dict]:
    if not isinstance(document, dict) or not isinstance(document.get("layers") or [], list):
        raise ValueError("The layers input is not a LAYERS document (connect Add Layer or Layers From Bounding "
                         "Boxes).")
    if document.get("version") not in (None, 1):
        raise ValueError(f"LAYERS document version {document['version']!r} is not supported (version 1 is).")
    items = []
    for index, item in enumerate(document.get("layers") or []):
        if not isinstance(item, dict) or not isinstance(item.get("image"), torch.Tensor):
            continue  # as Create Layered Image: entries without pixels are skipped
        if item.get("type", "raster") != "raster":
            raise ValueError(f"LAYERS item {index} is of type {item['type']!r}; only raster layers can be saved.")
        blend = item.get("blend_mode") or "normal"
        if blend not in BLEND_MODES:
            raise ValueError(f"LAYERS item {index} has blend mode {blend!r}, which this pack does not know.")
        items.append(item)
    return sorted(items, key=lambda item: int(_number(item.get("z_index"), 0)))  # stable, as the host's


def _frame_alpha(item: dict, frame: int) -> torch.Tensor:
    """[H,W] alpha of one frame: the image's own (or 1) times 1 - its mask frame, the mask resized if need be."""
    image = item["image"][frame]
    alpha = image[..., 3].float() if image.shape[-1] == 4 else torch.ones(image.shape[:2], device=image.device)
    mask = item.get("mask")
    if not isinstance(mask, torch.Tensor):
        return alpha
    mask = mask.reshape((-1,) + tuple(mask.shape[-2:]))
    if mask.shape[0] != 1 and frame >= mask.shape[0]:
        return alpha
    part = mask[0 if mask.shape[0] == 1 else frame].float().to(alpha.device)
    if part.shape != alpha.shape:
        part = F.interpolate(part[None, None], size=tuple(alpha.shape), mode="bilinear")[0, 0]
    return alpha * (1.0 - part).clamp(0, 1)


def _placed(item: dict, frame: int, name: str) -> Layer:
    image = item["image"][frame]
    rgba = torch.cat([image[..., :3].float(), _frame_alpha(item, frame)[..., None]], dim=-1)
    picture = Image.fromarray(to_uint8(rgba), "RGBA")
    if item.get("flip_h"):
        picture = picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if item.get("flip_v"):
        picture = picture.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    width = int(_number(item.get("w"), 0)) or picture.width
    height = int(_number(item.get("h"), 0)) or picture.height
    if (width, height) != picture.size:
        picture = picture.resize((width, height), Image.Resampling.LANCZOS)
    x, y = int(_number(item.get("x"), 0)), int(_number(item.get("y"), 0))
    rotation = _number(item.get("rotation"), 0.0)
    if rotation:  # clockwise on screen, about the layer's centre, which stays where it was
        picture = picture.rotate(-math.degrees(rotation), Image.Resampling.BICUBIC, expand=True,
                                 fillcolor=(0, 0, 0, 0))
        x, y = _rotated_origin(x, y, width, height, rotation, picture.size)
    opacity = min(max(_number(item.get("opacity"), 1.0), 0.0), 1.0)
    return Layer(np.asarray(picture), name, x, y, opacity, item.get("blend_mode") or "normal",
                 bool(item.get("visible", True)))


def _rotated_origin(x: int, y: int, width: int, height: int, rotation: float, size: tuple[int, int]) -> Canvas:
    """Where the rotated picture's top-left lands: centred in the whole-pixel box around the turned corners,
    with the same rounding as the host's compositor, so the file shows the layer where Create Layered Image does."""
    cx, cy, cos, sin = x + width / 2, y + height / 2, math.cos(rotation), math.sin(rotation)
    corners = [(dx * width / 2, dy * height / 2) for dx, dy in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
    xs = [cx + dx * cos - dy * sin for dx, dy in corners]
    ys = [cy + dx * sin + dy * cos for dx, dy in corners]
    left, top = math.floor(min(xs)), math.floor(min(ys))
    box = (max(1, math.ceil(max(xs)) - left), max(1, math.ceil(max(ys)) - top))
    return left + (box[0] - size[0]) // 2, top + (box[1] - size[1]) // 2


def stack_from_document(document) -> tuple[Canvas, list[Layer]]:
    """(canvas, layers bottom first) of a host LAYERS document; refuses what cannot be saved, naming it."""
    layers = []
    for item in _items(document):
        for frame in range(item["image"].shape[0]):
            name = item.get("name") if isinstance(item.get("name"), str) and item.get("name") else None
            layers.append(_placed(item, frame, name or f"layer {len(layers) + 1}"))
    if not layers:
        raise ValueError("The LAYERS document holds no layer with an image; add one with Add Layer.")
    canvas = document.get("canvas")
    if isinstance(canvas, (tuple, list)) and len(canvas) == 2 and min(_number(c, 0) for c in canvas) > 0:
        return (int(canvas[0]), int(canvas[1])), layers
    return (max(1, *(layer.x + layer.pixels.shape[1] for layer in layers)),
            max(1, *(layer.y + layer.pixels.shape[0] for layer in layers))), layers


def checked_stacks(stacks: Sequence[tuple[Canvas, list[Layer]]], formats: Sequence[str]) -> None:
    """Every refusal of every file before the first one is written."""
    for canvas, layers in stacks:
        check(canvas, layers, formats)
