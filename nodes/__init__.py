"""ComfyUI node classes: thin adapters over `layer_model` and `sketch_guidance`."""

from .codec_training import LayerDiffuseTrainTransparentVAE
from .layer_diffuse import (
    LayerDiffuseApply,
    LayerDiffuseCondApply,
    LayerDiffuseCondJointApply,
    LayerDiffuseDiffApply,
    LayerDiffuseJointApply,
)
from .layers import LayerDiffuseComposite, LayerDiffuseSaveLayers, LayerDiffuseSaveLayerStack
from .lora_training import LayerDiffuseRGBATrainingDataset
from .rgba_vae import (
    LayerDiffuseApplyRGBAVAELoRA,
    LayerDiffuseLoadRGBAVAE,
    LayerDiffuseRGBAVAEDecode,
    LayerDiffuseRGBAVAEEncode,
)
from .sketch import SketchGuidanceApply, SketchGuidanceLoadPredictor, SketchGuidanceTrainPredictor, SketchToEdgeMap
from .transparency import LayerDiffuseDecode, LayerDiffuseDecodeSplit, LayerDiffuseEncode

# Node ids are public API: saved graphs and shipped workflows refer to them. Never rename one.
NODE_CLASS_MAPPINGS = {
    "LayerDiffuseApply": LayerDiffuseApply,
    "LayerDiffuseJointApply": LayerDiffuseJointApply,
    "LayerDiffuseCondJointApply": LayerDiffuseCondJointApply,
    "LayerDiffuseCondApply": LayerDiffuseCondApply,
    "LayerDiffuseDiffApply": LayerDiffuseDiffApply,
    "LayerDiffuseDecode": LayerDiffuseDecode,
    "LayerDiffuseDecodeSplit": LayerDiffuseDecodeSplit,
    "LayerDiffuseEncode": LayerDiffuseEncode,
    "LayerDiffuseComposite": LayerDiffuseComposite,
    "LayerDiffuseSaveLayers": LayerDiffuseSaveLayers,
    "LayerDiffuseSaveLayerStack": LayerDiffuseSaveLayerStack,
    "LayerDiffuseTrainTransparentVAE": LayerDiffuseTrainTransparentVAE,
    "LayerDiffuseRGBATrainingDataset": LayerDiffuseRGBATrainingDataset,
    "LayerDiffuseLoadRGBAVAE": LayerDiffuseLoadRGBAVAE,
    "LayerDiffuseRGBAVAEDecode": LayerDiffuseRGBAVAEDecode,
    "LayerDiffuseRGBAVAEEncode": LayerDiffuseRGBAVAEEncode,
    "LayerDiffuseApplyRGBAVAELoRA": LayerDiffuseApplyRGBAVAELoRA,
    "SketchGuidanceLoadPredictor": SketchGuidanceLoadPredictor,
    "SketchGuidanceApply": SketchGuidanceApply,
    "SketchGuidanceTrainPredictor": SketchGuidanceTrainPredictor,
    "SketchToEdgeMap": SketchToEdgeMap,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "LayerDiffuseApply": "Layer Diffuse Apply (transparent)",
    "LayerDiffuseJointApply": "Layer Diffuse Joint Apply (SD1.5)",
    "LayerDiffuseCondJointApply": "Layer Diffuse Cond Joint (SD1.5)",
    "LayerDiffuseCondApply": "Layer Diffuse Cond Apply (SDXL)",
    "LayerDiffuseDiffApply": "Layer Diffuse Diff Apply (SDXL)",
    "LayerDiffuseDecode": "Layer Diffuse Decode (RGBA)",
    "LayerDiffuseDecodeSplit": "Layer Diffuse Decode Split (RGBA)",
    "LayerDiffuseEncode": "Layer Diffuse Encode (RGBA)",
    "LayerDiffuseComposite": "Layer Diffuse Composite (RGBA)",
    "LayerDiffuseSaveLayers": "Layer Diffuse Save Layers (ORA/PSD)",
    "LayerDiffuseSaveLayerStack": "Layer Diffuse Save Layer Stack",
    "LayerDiffuseTrainTransparentVAE": "Layer Diffuse Train Transparent VAE",
    "LayerDiffuseRGBATrainingDataset": "Layer Diffuse RGBA Training Dataset",
    "LayerDiffuseLoadRGBAVAE": "Layer Diffuse Load RGBA VAE",
    "LayerDiffuseRGBAVAEDecode": "Layer Diffuse RGBA VAE Decode",
    "LayerDiffuseRGBAVAEEncode": "Layer Diffuse RGBA VAE Encode",
    "LayerDiffuseApplyRGBAVAELoRA": "Layer Diffuse Apply RGBA VAE LoRA",
    "SketchGuidanceLoadPredictor": "Sketch Guidance Load Predictor",
    "SketchGuidanceApply": "Sketch Guidance Apply",
    "SketchGuidanceTrainPredictor": "Sketch Guidance Train Predictor",
    "SketchToEdgeMap": "Sketch to Edge Map",
}
