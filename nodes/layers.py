"""Nodes for layers out: alpha compositing, and saving a set of layers as one layered file plus PNGs."""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image

from ..common import files
from ..common import host as common_host
from ..layer_model.alpha import composite_over, preview_on_checkerboard, stack_layers
from ..layer_model.layered_files import write_ora, write_psd

CATEGORY = "layer_diffuse"
LAYER_TOOLTIP = "An RGBA image (from Layer Diffuse Decode) or an RGB one (opaque)."
FORMATS = ["ora + psd + png", "ora + png", "psd + png", "png"]


def _layer_inputs(first: str, second: str) -> dict:
    return {
        "required": {
            first: ("IMAGE", {"tooltip": f"The bottom layer. {LAYER_TOOLTIP}"}),
            second: ("IMAGE", {"tooltip": f"The layer over it. {LAYER_TOOLTIP}"}),
        },
        "optional": {
            "layer_3": ("IMAGE", {"tooltip": f"Optional: a third layer on top. {LAYER_TOOLTIP}"}),
            "layer_4": ("IMAGE", {"tooltip": f"Optional: a fourth layer on top. {LAYER_TOOLTIP}"}),
        },
    }


class LayerDiffuseComposite:
    DESCRIPTION = "Puts RGBA layers over each other (alpha 'over' compositing), bottom first, into one RGBA image."
    CATEGORY = CATEGORY
    FUNCTION = "composite"
    RETURN_TYPES = ("IMAGE", "MASK", "IMAGE")
    RETURN_NAMES = ("rgba", "mask", "preview")
    OUTPUT_TOOLTIPS = ("The composite, RGBA with straight alpha.",
                       "Its transparency as a MASK (1 where transparent, as Load Image gives it).",
                       "The composite over a checkerboard, to see its transparency.")

    @classmethod
    def INPUT_TYPES(cls):
        inputs = _layer_inputs("background", "foreground")
        inputs["optional"]["alpha"] = (["straight", "premultiplied"], {
            "default": "straight",
            "tooltip": "How the inputs' colour relates to alpha: 'straight' (PNGs, Layer Diffuse Decode) or "
                       "'premultiplied' (colour already multiplied by alpha)."})
        return inputs

    def composite(self, background, foreground, layer_3=None, layer_4=None, alpha="straight"):
        _, layers = stack_layers([("background", background), ("foreground", foreground), ("layer_3", layer_3),
                                  ("layer_4", layer_4)])
        out = composite_over(layers, premultiplied=alpha == "premultiplied").to(common_host.intermediate_device())
        preview = preview_on_checkerboard(out[:, :3], out[:, 3:])
        return out.movedim(1, -1), 1.0 - out[:, 3], preview.movedim(1, -1)


class LayerDiffuseSaveLayers:
    DESCRIPTION = ("Saves layers as one layered file that image editors open with the layers intact: OpenRaster "
                   "(.ora: Krita, GIMP, MyPaint) and Photoshop (.psd), plus each layer as a transparent PNG.")
    CATEGORY = CATEGORY
    FUNCTION = "save"
    OUTPUT_NODE = True
    RETURN_TYPES = ()

    @classmethod
    def INPUT_TYPES(cls):
        inputs = _layer_inputs("background", "foreground")
        inputs["required"]["filename_prefix"] = ("STRING", {
            "default": "layer_diffuse/layers",
            "tooltip": "File name start, inside the output folder (a folder part is allowed)."})
        inputs["required"]["formats"] = (FORMATS, {
            "default": FORMATS[0], "tooltip": "Which layered files to write; the PNGs are always written."})
        inputs["optional"]["layer_names"] = ("STRING", {
            "default": "background, foreground, layer 3, layer 4",
            "tooltip": "Layer names in the files, bottom first, separated by commas."})
        return inputs

    def save(self, background, foreground, filename_prefix, formats, layer_3=None, layer_4=None,
             layer_names="background, foreground, layer 3, layer 4"):
        keys, layers = stack_layers([("background", background), ("foreground", foreground),
                                     ("layer_3", layer_3), ("layer_4", layer_4)])
        names = _names(layer_names, keys)
        height, width = layers[0].shape[-2:]
        folder, stem, counter, subfolder = common_host.output_path(filename_prefix, width, height)
        shown = []
        for index in range(layers[0].shape[0]):
            arrays = [_uint8(layer[index]) for layer in layers]
            base = f"{stem}_{counter + index:05}_"
            if "ora" in formats:
                write_ora(os.path.join(folder, base + ".ora"), arrays, names)
            if "psd" in formats:
                write_psd(os.path.join(folder, base + ".psd"), arrays, names)
            for key, array in zip(keys, arrays, strict=True):
                file = f"{base}{key}.png"
                _save_png(os.path.join(folder, file), array)
                shown.append({"filename": file, "subfolder": subfolder, "type": "output"})
        return {"ui": {"images": shown}}


SLOTS = ("background", "foreground", "layer_3", "layer_4")


def _names(given: str, keys: list[str]) -> list[str]:
    """The name given for each connected slot (by the slot's position), or the slot's own name."""
    names = [name.strip() for name in given.split(",")]
    return [names[SLOTS.index(key)] if SLOTS.index(key) < len(names) and names[SLOTS.index(key)] else key
            for key in keys]


def _uint8(layer: torch.Tensor) -> np.ndarray:
    return (layer.movedim(0, -1).clamp(0, 1) * 255.0).round().to(torch.uint8).cpu().numpy()


def _save_png(path: str, array: np.ndarray) -> None:
    with files.atomic_path(path) as tmp:
        Image.fromarray(array, "RGBA").save(tmp, format="PNG", compress_level=4)
