"""ComfyUI node classes: thin adapters over `layer_model` and `sketch_guidance`."""

from .layer_diffuse import LayerDiffuseApply, LayerDiffuseCondJointApply, LayerDiffuseJointApply
from .transparency import LayerDiffuseDecode, LayerDiffuseDecodeSplit, LayerDiffuseEncode

# Node ids are public API: saved graphs and shipped workflows refer to them. Never rename one.
NODE_CLASS_MAPPINGS = {
    "LayerDiffuseApply": LayerDiffuseApply,
    "LayerDiffuseJointApply": LayerDiffuseJointApply,
    "LayerDiffuseCondJointApply": LayerDiffuseCondJointApply,
    "LayerDiffuseDecode": LayerDiffuseDecode,
    "LayerDiffuseDecodeSplit": LayerDiffuseDecodeSplit,
    "LayerDiffuseEncode": LayerDiffuseEncode,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "LayerDiffuseApply": "Layer Diffuse Apply (transparent)",
    "LayerDiffuseJointApply": "Layer Diffuse Joint Apply (SD1.5 fg + bg + blended)",
    "LayerDiffuseCondJointApply": "Layer Diffuse Cond Joint Apply (SD1.5 layer from layer)",
    "LayerDiffuseDecode": "Layer Diffuse Decode (RGBA)",
    "LayerDiffuseDecodeSplit": "Layer Diffuse Decode Split (RGBA layers)",
    "LayerDiffuseEncode": "Layer Diffuse Encode (RGBA to latent)",
}
