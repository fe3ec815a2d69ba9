"""Sketch guidance next to other packs on the same MODEL, in-process: patches that hold inference tensors,
PAG, and a user's LoRA before and after the guidance node."""

from __future__ import annotations

import comfy.ldm.modules.attention as host_attention
import comfy.sample
import pytest
import torch
from comfy_extras.nodes_hypertile import HyperTile
from comfy_extras.nodes_pag import PerturbedAttentionGuidance
from comfy_extras.nodes_sag import SelfAttentionGuidance
from comfyui_layer_sketch.layer_model.attention_patches import block_key
from comfyui_layer_sketch.layer_model.attention_sharing import attention_paths
from comfyui_layer_sketch.nodes import NODE_CLASS_MAPPINGS
from comfyui_layer_sketch.sketch_guidance.predictor import load_predictor
from support import sketches
from support.host_models import patcher_of
from support.loras import write_lora

from nodes import LoraLoader

Apply = NODE_CLASS_MAPPINGS["SketchGuidanceApply"]


def _prompts(clip):
    with torch.inference_mode():
        return (clip.encode_from_tokens_scheduled(clip.tokenize("a shape")),
                clip.encode_from_tokens_scheduled(clip.tokenize("")))


def _sample(model, clip, seed: int = 3, steps: int = 6, size: int = 8):
    positive, negative = _prompts(clip)
    latent = torch.zeros(1, 4, size, size)
    torch.manual_seed(seed)  # HyperTile draws its tile sizes from the global generator
    with torch.inference_mode():
        return comfy.sample.sample(model, comfy.sample.prepare_noise(latent, seed), steps, 5.0, "euler", "normal",
                                   positive, negative, latent, seed=seed, disable_pbar=True)


def _guided(model, vae, trained, strength: float = 1.6):
    with torch.inference_mode():
        return Apply().apply(model, vae, patcher_of(load_predictor(trained[0])), sketches.drawn_sketch(1),
                             strength, 0.5)[0]


class StoredImageTokens:
    """An IP-Adapter-style attn2 replace patch whose embedding, projections and weight were made under
    inference mode (as a loader node makes them) and are used with the UNet's queries."""

    def __init__(self, model) -> None:
        generator = torch.Generator().manual_seed(0)
        unet = model.model.diffusion_model
        with torch.inference_mode():
            self.embedding = torch.randn(1, 4, 768, generator=generator)
            self.weight = torch.tensor(0.7)
            self.projections = {}
            for path in attention_paths(unet)[1::2]:
                width = unet.get_submodule(path.removeprefix("diffusion_model.")).to_k.out_features
                self.projections[block_key(path)] = torch.randn(768, width, generator=generator) * 0.05

    def __call__(self, q, k, v, extra):
        out = host_attention.optimized_attention(q, k, v, extra["n_heads"])
        to_kv = self.projections[(*extra["block"], extra["block_index"])]
        image = torch.nn.functional.linear(self.embedding, to_kv.t()).expand(q.shape[0], -1, -1)
        return out + self.weight * host_attention.optimized_attention(q, image, image, extra["n_heads"])


def _with_image_tokens(model):
    patched = model.clone()
    patch = StoredImageTokens(model)
    for path in attention_paths(model.model.diffusion_model)[1::2]:
        patched.set_model_attn2_replace(patch, *block_key(path))
    return patched


def test_guidance_runs_through_patches_that_hold_inference_tensors(narrow, clip, trained):
    model, vae = narrow
    tokens = _with_image_tokens(model)
    plain = _sample(tokens, clip)
    guided_after = _sample(_guided(tokens, vae, trained), clip)
    guided_before = _sample(_with_image_tokens(_guided(model, vae, trained)), clip)
    assert torch.isfinite(guided_after).all() and (guided_after - plain).abs().max() > 1e-3
    torch.testing.assert_close(guided_before, guided_after, rtol=0, atol=1e-4)
    assert (guided_after - _sample(_guided(model, vae, trained), clip)).abs().max() > 1e-3, "the patch acts too"


ATTENTION_GUIDANCE = {
    "PAG": lambda model: PerturbedAttentionGuidance.execute(model, 3.0)[0],
    "SAG": lambda model: SelfAttentionGuidance.execute(model, 0.5, 2.0)[0],
    "HyperTile": lambda model: HyperTile.execute(model, 32, 2, 0, False)[0],
}


@pytest.mark.parametrize("node", ATTENTION_GUIDANCE)
def test_guidance_with_attention_guidance_in_either_order(narrow, clip, trained, node):
    """PAG and SAG call the model again at each sigma after the CFG step; that call is not guided a second
    time, so the result does not depend on which node comes first. HyperTile tiles the guided pass's
    self-attention like any other."""
    model, vae = narrow
    other = ATTENTION_GUIDANCE[node]
    other_first = _sample(_guided(other(model), vae, trained), clip, size=16)
    guidance_first = _sample(other(_guided(model, vae, trained)), clip, size=16)
    torch.testing.assert_close(other_first, guidance_first, rtol=0, atol=1e-4)
    assert (other_first - _sample(other(model), clip, size=16)).abs().max() > 1e-3, f"guidance acts next to {node}"
    assert (other_first - _sample(_guided(model, vae, trained), clip, size=16)).abs().max() > 1e-3, \
        f"{node} acts next to guidance"


def test_guidance_with_a_user_lora_before_and_after(narrow, clip, trained, lora_folder):
    """LoraLoader (model and CLIP) before or after the guidance node: the LoRA acts and guidance acts, in
    either order alike (the guided pass reads the UNet with the LoRA's weights)."""
    model, vae = narrow
    name = write_lora(lora_folder, model, clip)
    lora_model, lora_clip = LoraLoader().load_lora(model, clip, name, 1.0, 1.0)
    lora_first = _sample(_guided(lora_model, vae, trained), lora_clip)
    guidance_first = _sample(LoraLoader().load_lora(_guided(model, vae, trained), clip, name, 1.0, 1.0)[0], lora_clip)
    torch.testing.assert_close(lora_first, guidance_first, rtol=0, atol=1e-4)
    assert (lora_first - _sample(lora_model, lora_clip)).abs().max() > 1e-3, "guidance acts on the LoRA'd model"
    assert (lora_first - _sample(_guided(model, vae, trained), clip)).abs().max() > 1e-3, "the LoRA acts"
