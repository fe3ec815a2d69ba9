"""A test-only ComfyUI node: FLUX CONDITIONING of the real shapes without the text encoders.

T5-XXL alone has 4.8 B parameters; the HTTP tests swap the shipped graphs' DualCLIPLoader + CLIP Text
Encode for this node, and keep everything else (FluxGuidance, the sampler, the VAE, the pack's nodes).
FLUX.1 takes 4096 features a token (T5-XXL) and a pooled CLIP-L vector; FLUX.2 Klein 4B 7680 (Qwen3-4B) and
none.
"""

import torch


class LayerSketchTestFluxConditioning:
    CATEGORY = "testing"
    FUNCTION = "make"
    RETURN_TYPES = ("CONDITIONING",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": 2**31}),
                             "tokens": ("INT", {"default": 16, "min": 1, "max": 512})},
                "optional": {"features": ("INT", {"default": 4096, "min": 1, "max": 16384}),
                             "pooled": ("BOOLEAN", {"default": True})}}

    def make(self, seed, tokens, features=4096, pooled=True):
        generator = torch.Generator().manual_seed(seed)
        context = torch.randn(1, tokens, features, generator=generator)
        extra = {"pooled_output": torch.randn(1, 768, generator=generator)} if pooled else {}
        return ([[context, extra]],)


NODE_CLASS_MAPPINGS = {"LayerSketchTestFluxConditioning": LayerSketchTestFluxConditioning}
