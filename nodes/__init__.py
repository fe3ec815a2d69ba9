"""ComfyUI node classes: thin adapters over `layer_model` and `sketch_guidance`."""

from .layer_diffuse import LayerDiffuseApply
from .transparency import LayerDiffuseDecode, LayerDiffuseDecodeSplit, LayerDiffuseEncode

# Node ids are public API: saved graphs and shipped workflows refer to them. Never rename one.
NODE_CLASS_MAPPINGS = {
    "LayerDiffuseApply": LayerDiffuseApply,
    "LayerDiffuseDecode": LayerDiffuseDecode,
    "LayerDiffuseDecodeSplit": LayerDiffuseDecodeSplit,
    "LayerDiffuseEncode": LayerDiffuseEncode,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "LayerDiffuseApply": "Layer Diffuse Apply (transparent)",
    "LayerDiffuseDecode": "Layer Diffuse Decode (RGBA)",
    "LayerDiffuseDecodeSplit": "Layer Diffuse Decode Split (RGBA layers)",
    "LayerDiffuseEncode": "Layer Diffuse Encode (RGBA to latent)",
}
