"""A test-only ComfyUI node: FLUX.1 CONDITIONING of the real shapes without the text encoders.

T5-XXL alone has 4.8 B parameters; the HTTP tests swap the shipped graphs' DualCLIPLoader + CLIP Text
Encode for this node, and keep everything else (FluxGuidance, the sampler, the VAE, the pack's nodes).
"""

import torch


class LayerSketchTestFluxConditioning:
    CATEGORY = "testing"
    FUNCTION = "make"
    RETURN_TYPES = ("CONDITIONING",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": 2**31}),
                             "tokens": ("INT", {"default": 16, "min": 1, "max": 512})}}

    def make(self, seed, tokens):
        generator = torch.Generator().manual_seed(seed)
        return ([[torch.randn(1, tokens, 4096, generator=generator),
                  {"pooled_output": torch.randn(1, 768, generator=generator)}]],)


NODE_CLASS_MAPPINGS = {"LayerSketchTestFluxConditioning": LayerSketchTestFluxConditioning}
