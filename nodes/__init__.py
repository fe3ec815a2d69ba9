"""ComfyUI node classes: thin adapters over `layer_model` and `sketch_guidance`."""

from .transparency import LayerDiffuseDecode, LayerDiffuseDecodeSplit, LayerDiffuseEncode

# Node ids are public API: saved graphs and shipped workflows refer to them. Never rename one.
NODE_CLASS_MAPPINGS = {
    "LayerDiffuseDecode": LayerDiffuseDecode,
    "LayerDiffuseDecodeSplit": LayerDiffuseDecodeSplit,
    "LayerDiffuseEncode": LayerDiffuseEncode,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "LayerDiffuseDecode": "Layer Diffuse Decode (RGBA)",
    "LayerDiffuseDecodeSplit": "Layer Diffuse Decode Split (RGBA layers)",
    "LayerDiffuseEncode": "Layer Diffuse Encode (RGBA to latent)",
}
