"""Nodes for layers out: alpha compositing, and saving a set of layers as one layered file plus PNGs."""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image

from ..common import files
from ..common import host as common_host
from ..layer_model.alpha import composite_over, preview_on_checkerboard, stack_layers
from ..layer_model.layer_documents import checked_stacks, stack_from_document, stacks_from_batch
from ..layer_model.layered_files import Layer, write_ora, write_ora_document, write_psd, write_psd_document

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


class LayerDiffuseSaveLayerStack:
    DESCRIPTION = ("Saves a layer stack as one layered file (.ora, .psd) plus each layer as a transparent PNG: an "
                   "RGBA batch where each image is a layer (Qwen-Image-Layered's decode), or the host's LAYERS "
                   "(Add Layer) with their positions, opacity, blend modes and order.")
    CATEGORY = CATEGORY
    FUNCTION = "save"
    OUTPUT_NODE = True
    RETURN_TYPES = ()

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "filename_prefix": ("STRING", {
                    "default": "layer_diffuse/stack",
                    "tooltip": "File name start, inside the output folder (a folder part is allowed)."}),
                "formats": (FORMATS, {
                    "default": FORMATS[0], "tooltip": "Which layered files to write; the PNGs are always written."}),
            },
            "optional": {
                "images": ("IMAGE", {
                    "tooltip": "A batch where each image is one layer: RGBA (alpha in the 4th channel, as "
                               "Qwen-Image-Layered's decode gives it) or RGB (opaque, or with the mask). Connect "
                               "this or layers."}),
                "mask": ("MASK", {
                    "tooltip": "Optional transparency for the images, as Load Image gives it: 1 where transparent. "
                               "It replaces the images' own alpha (as in Layer Diffuse Encode)."}),
                "layers": ("LAYERS", {
                    "tooltip": "The host's layer stack (ComfyUI 0.33+: Add Layer, Layers From Bounding Boxes): "
                               "positions become layer offsets; opacity, blend mode, visibility and z order are "
                               "kept; size, flips and rotation are applied to the pixels. Connect this or images."}),
                "layer_names": ("STRING", {
                    "default": "",
                    "tooltip": "For images: layer names, bottom first, separated by commas (empty: layer 1, 2, "
                               "...). LAYERS carry their own names."}),
                "order": (["bottom first", "top first"], {
                    "default": "bottom first",
                    "tooltip": "For images: whether the batch starts with the bottom layer or the top one."}),
                "layers_per_file": ("INT", {
                    "default": 0, "min": 0, "max": 4096,
                    "tooltip": "For images: how many consecutive images make one file (a batch of several "
                               "decompositions); 0: the whole batch is one file."}),
            },
        }

    def save(self, filename_prefix, formats, images=None, mask=None, layers=None, layer_names="",
             order="bottom first", layers_per_file=0):
        if (images is None) == (layers is None):
            raise ValueError("Connect either images (a batch of layers) or layers (the host's LAYERS), not "
                             f"{'both' if images is not None else 'neither'}.")
        if images is not None:
            stacks = stacks_from_batch(images, mask, layer_names, order == "top first", layers_per_file)
        else:
            stacks = [stack_from_document(layers)]
        chosen = [fmt for fmt in ("ora", "psd") if fmt in formats]
        checked_stacks(stacks, chosen)  # every refusal before the first file
        folder, stem, counter, subfolder = common_host.output_path(filename_prefix, *stacks[0][0])
        shown = []
        for index, (canvas, stack) in enumerate(stacks):
            base = os.path.join(folder, f"{stem}_{counter + index:05}_")
            if "ora" in chosen:
                write_ora_document(base + ".ora", canvas, stack)
            if "psd" in chosen:
                write_psd_document(base + ".psd", canvas, stack)
            shown += _save_layer_pngs(base, stack, subfolder)
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


def _save_layer_pngs(base: str, stack: list[Layer], subfolder: str) -> list[dict]:
    shown = []
    for number, layer in enumerate(stack, start=1):
        path = f"{base}{number:02d}.png"
        _save_png(path, layer.pixels)
        shown.append({"filename": os.path.basename(path), "subfolder": subfolder, "type": "output"})
    return shown
