"""SD1.5 attention sharing next to other packs' attention patches, on the real host (items: every patch kind,
IP-Adapter-style cross-attention). Patches are put on through the host's own ModelPatcher API, as packs do."""

from __future__ import annotations

import comfy.ldm.modules.attention as host_attention
import pytest
import torch
from comfyui_layer_sketch.layer_model.attention_patches import block_key
from comfyui_layer_sketch.layer_model.attention_sharing import attention_paths
from support.host_models import tiny_model
from support.layer_modes import SD15_MODES, apply_mode, frames_of, install_mode_files, sample

# The relative difference a no-op patch may make, against LayerDiffusion's whole effect.
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def sd15():
    return tiny_model("SD15")


@pytest.fixture
def modes(layer_folder, sd15):
    install_mode_files(layer_folder, sd15)
    return layer_folder


def plain_attention(q, k, v, extra):
    return host_attention.optimized_attention(q, k, v, extra["n_heads"])


def replace_everywhere(model, patch, kinds=("attn1", "attn2")):
    """A clone with `patch` as the replace patch of every transformer block's attention (IP-Adapter's way)."""
    patched = model.clone()
    for path in attention_paths(patched.model.diffusion_model)[::2]:
        name, number, index = block_key(path)
        for kind in kinds:
            setter = patched.set_model_attn1_replace if kind == "attn1" else patched.set_model_attn2_replace
            setter(patch, name, number, index)
    return patched


def relative_change(result, reference, base) -> float:
    return float((result - reference).abs().max() / (reference - base).abs().max())


@pytest.mark.parametrize("mode", SD15_MODES)
def test_plain_replace_patches_leave_layer_diffusion_unchanged(modes, sd15, mode):
    batch = frames_of(mode) * 2
    base = sample(sd15, batch)
    layered = sample(apply_mode(sd15, mode), batch)
    assert torch.equal(sample(replace_everywhere(sd15, plain_attention), batch), base), "a no-op on the plain model"
    patched_after = replace_everywhere(apply_mode(sd15, mode), plain_attention)
    patched_before = apply_mode(replace_everywhere(sd15, plain_attention), mode)
    for patched in (patched_after, patched_before):
        change = relative_change(sample(patched, batch), layered, base)
        assert change <= TOLERANCE, f"{mode}: a plain-attention replace patch moved the result by {change:.2e}"


def _identity_in(n, context, value, extra):
    return n, context, value


def _identity_out(n, extra):
    return n


@pytest.mark.parametrize("mode", SD15_MODES)
def test_input_and_output_patches_see_the_layers_and_keep_them(modes, sd15, mode):
    batch = frames_of(mode) * 2
    base, layered = sample(sd15, batch), sample(apply_mode(sd15, mode), batch)
    patched = apply_mode(sd15, mode)
    patched.set_model_attn1_patch(_identity_in)
    patched.set_model_attn2_patch(_identity_in)
    patched.set_model_attn1_output_patch(_identity_out)
    patched.set_model_attn2_output_patch(_identity_out)
    assert relative_change(sample(patched, batch), layered, base) <= TOLERANCE

    def halve_attn2(n, extra):
        return n * 0.5

    halved = apply_mode(sd15, mode)
    halved.set_model_attn2_output_patch(halve_attn2)
    assert relative_change(sample(halved, batch), layered, base) > 1e-3, "an output patch that acts still acts"


def _module(model, path: str) -> torch.nn.Module:
    return model.model.diffusion_model.get_submodule(path.removeprefix("diffusion_model."))


class ImageTokens:
    """An IP-Adapter-style attn2 replace patch: attention over extra image tokens with its own k/v projections
    of a stored embedding, added to the prompt's attention. Its tensors are made under inference mode, as a
    loader node makes them."""

    def __init__(self, model, scale: float, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        with torch.inference_mode():
            self.embedding = torch.randn(1, 4, 768, generator=generator)
            self.projections = {}
            for path in attention_paths(model.model.diffusion_model)[1::2]:
                width = _module(model, path).to_k.out_features
                self.projections[block_key(path)] = (torch.randn(768, width, generator=generator) * 0.05,
                                                     torch.randn(768, width, generator=generator) * 0.05)
        self.scale, self.terms = scale, []

    def __call__(self, q, k, v, extra):
        out = host_attention.optimized_attention(q, k, v, extra["n_heads"])
        to_k, to_v = self.projections[(*extra["block"], extra["block_index"])]
        rows = q.shape[0]
        image_k = (self.embedding @ to_k.to(q)).expand(rows, -1, -1)
        image_v = (self.embedding @ to_v.to(q)).expand(rows, -1, -1)
        term = self.scale * host_attention.optimized_attention(q, image_k, image_v, extra["n_heads"])
        self.terms.append((q, term))
        return out + term


@pytest.mark.parametrize("mode", SD15_MODES)
def test_ip_adapter_style_tokens_add_their_term_on_top_of_the_layers(modes, sd15, mode):
    batch = frames_of(mode) * 2
    base, layered = sample(sd15, batch), sample(apply_mode(sd15, mode), batch)
    silent = ImageTokens(sd15, 0.0)
    assert relative_change(sample(replace_everywhere(apply_mode(sd15, mode), silent, ("attn2",)), batch),
                           layered, base) <= TOLERANCE, "at weight 0 the image tokens add nothing"
    tokens = ImageTokens(sd15, 1.0)
    with_tokens = sample(replace_everywhere(apply_mode(sd15, mode), tokens, ("attn2",)), batch)
    plain_tokens = sample(replace_everywhere(sd15, ImageTokens(sd15, 1.0), ("attn2",)), batch)
    assert relative_change(with_tokens, layered, base) > 1e-3, "the image tokens steer the layers"
    assert (with_tokens - plain_tokens).abs().max() > 1e-3, "LayerDiffusion stays in effect"
    # The term the patch added is attention of LayerDiffusion's (LoRA'd) queries over the image tokens.
    q, term = tokens.terms[0]
    first = attention_paths(sd15.model.diffusion_model)[1]
    k = tokens.embedding @ tokens.projections[block_key(first)][0]
    v = tokens.embedding @ tokens.projections[block_key(first)][1]
    heads = _module(sd15, first).heads
    expected = host_attention.optimized_attention(q, k.expand(q.shape[0], -1, -1), v.expand(q.shape[0], -1, -1),
                                                  heads)
    torch.testing.assert_close(term, expected, rtol=1e-5, atol=1e-6)


def test_ip_adapter_style_tokens_see_the_layers_lora_queries(modes, sd15):
    """On the first block, the q the patch receives is the unit's own projection with each frame's LoRA."""
    mode = "joint"
    first = attention_paths(sd15.model.diffusion_model)[1]
    inputs = []

    def record_input(n, context, value, extra):
        if (*extra["block"], extra["block_index"]) == block_key(first):
            inputs.append(n)
        return n, context, value

    tokens = ImageTokens(sd15, 1.0)
    patched = replace_everywhere(apply_mode(sd15, mode), tokens, ("attn2",))
    patched.set_model_attn2_patch(record_input)
    sample(patched, 6, steps=1)
    unit = patched.object_patches[first]
    q, n = tokens.terms[0][0], inputs[0]
    for frame in range(3):
        weight = unit.original.to_q.weight + unit._state.weight * unit.to_q_lora[frame].delta()
        torch.testing.assert_close(q[frame::3], torch.nn.functional.linear(n[frame::3], weight), rtol=1e-4, atol=1e-5)


def test_attention_override_of_another_pack_reaches_the_layers_frame_attention(modes, sd15):
    """Packs that swap the attention kernel (`optimized_attention_override` in transformer_options) see every
    attention call the plain model makes, with LayerDiffusion's units in place too; the result is unchanged."""
    mode = "joint"
    calls = {"plain": 0, "layers": 0}

    def counting(name):
        def override(func, *args, **kwargs):
            calls[name] += 1
            return func(*args, **kwargs)
        return override

    base, layered = sample(sd15, 6), sample(apply_mode(sd15, mode), 6)
    for name, model in (("plain", sd15.clone()), ("layers", apply_mode(sd15, mode))):
        model.model_options["transformer_options"]["optimized_attention_override"] = counting(name)
        result = sample(model, 6)
        if name == "plain":
            assert torch.equal(result, base)
        else:
            assert relative_change(result, layered, base) <= TOLERANCE
    assert calls["layers"] == calls["plain"] > 0
