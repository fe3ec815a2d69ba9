"""The attention-sharing units take part in the host's attention patches: routing, replace patches, tiling."""

from __future__ import annotations

import pytest
import torch
from comfyui_layer_sketch.layer_model.attention_patches import (
    REPLACED,
    ControlPatches,
    block_key,
    join_frames,
    route_patches,
    split_frames,
)
from comfyui_layer_sketch.layer_model.attention_sharing import AttentionSharingLayers, SharingState, sdpa_attention
from support.attention_layout import FakeAttention


def _noop_patch(q, k, v, extra):
    return sdpa_attention(q, k, v, extra["n_heads"])


def test_block_keys_follow_the_hosts_naming():
    assert block_key("diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2") == ("input", 4, 0)
    assert block_key("diffusion_model.middle_block.1.transformer_blocks.3.attn1") == ("middle", 0, 3)
    assert block_key("diffusion_model.output_blocks.11.1.transformer_blocks.1.attn1") == ("output", 11, 1)


def test_routing_moves_replace_patches_and_wraps_control_around_the_others():
    theirs_in, theirs_out, dit = object(), object(), object()
    options = {"patches": {"attn1_patch": [theirs_in], "attn1_output_patch": [theirs_out]},
               "patches_replace": {"attn2": {("input", 1, 0): _noop_patch}, "dit": {"x": dit}}, "sigmas": 1}
    control = ControlPatches({})
    routed = route_patches(options, control)
    assert routed[REPLACED] == {"attn2": {("input", 1, 0): _noop_patch}}
    assert routed["patches_replace"] == {"dit": {"x": dit}}, "other kinds of replace patch stay with the host"
    assert routed["patches"]["attn1_patch"] == [control.inputs["attn1"], theirs_in]
    assert routed["patches"]["attn1_output_patch"] == [theirs_out, control.outputs["attn1"]]
    assert options["patches_replace"]["attn2"] and options["patches"]["attn1_patch"] == [theirs_in], \
        "the caller's options are not changed"
    assert route_patches({"sigmas": 1}) == {"sigmas": 1}


@pytest.mark.parametrize("frames, tiles", [(1, 1), (3, 1), (2, 4)])
def test_frames_split_and_join_back(frames, tiles):
    rows = torch.arange(2 * frames * tiles)
    framed = split_frames(rows, frames, tiles)
    assert framed.shape == (frames, 2 * tiles)
    assert all(((framed[f] // tiles) % frames == f).all() for f in range(frames))
    assert torch.equal(join_frames(framed, tiles), rows)


def _unit(frames: int, seed: int = 0, heads: int = 4):
    torch.manual_seed(seed)
    original = FakeAttention(64, 64, heads=heads)
    layers = AttentionSharingLayers([original], frames, False, SharingState(weight=0.8))
    with torch.no_grad():
        for p in layers.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # LoRA ups start at zero in torch's init
    return layers.units[0]


def _options(patch, **extra) -> dict:
    return {"block": ("input", 1), "block_index": 0, "cond_or_uncond": [0, 1], REPLACED: {"attn1": {
        ("input", 1, 0): patch}}, **extra}


@pytest.mark.parametrize("frames", [1, 2, 3])
def test_plain_replace_patch_leaves_the_unit_unchanged(frames):
    unit = _unit(frames)
    x = torch.randn(2 * frames, 16, 64)
    plain = unit(x, transformer_options={"cond_or_uncond": [0, 1]})
    replaced = unit(x, transformer_options=_options(_noop_patch))
    torch.testing.assert_close(replaced, plain, rtol=0, atol=1e-6)


def test_replace_patch_sees_the_units_projections_and_its_result_goes_through_them():
    unit = _unit(3)
    x = torch.randn(6, 16, 64)
    seen = {}

    def doubled(q, k, v, extra):
        seen.update(q=q, k=k, v=v, extra=extra)
        return 2.0 * sdpa_attention(q, k, v, extra["n_heads"])

    out = unit(x, transformer_options=_options(doubled, sigmas=torch.tensor([1.0])))
    weight = unit._state.weight
    for f in range(3):
        lora = unit.to_q_lora[f]
        expected = torch.nn.functional.linear(x[f::3], unit.original.to_q.weight + weight * lora.delta())
        torch.testing.assert_close(seen["q"][f::3], expected, rtol=1e-5, atol=1e-5)
    assert seen["extra"]["n_heads"] == 4 and seen["extra"]["dim_head"] == 16 and REPLACED not in seen["extra"]
    reference = _unit(3)  # the same unit with its frame attention (called with the host's options) doubled
    reference._attention = lambda q, k, v, heads, **kw: ("transformer_options" in kw) * sdpa_attention(q, k, v, heads) \
        + sdpa_attention(q, k, v, heads)
    torch.testing.assert_close(out, reference(x, transformer_options={"cond_or_uncond": [0, 1]}),
                               rtol=1e-5, atol=1e-5)


def test_inactive_unit_calls_the_replace_patch_as_the_host_would():
    unit = _unit(2)
    unit._state.weight = 0.0
    x = torch.randn(4, 16, 64)
    original = unit.original
    expected = original.to_out[0](_noop_patch(original.to_q(x), original.to_k(x), original.to_v(x), {"n_heads": 4}))
    torch.testing.assert_close(unit(x, transformer_options=_options(_noop_patch)), expected, rtol=0, atol=1e-6)


def test_tiled_queries_keep_each_frame_with_its_own_projection():
    """A patch that splits each sample's tokens into rows (HyperTile) changes the row count of q only."""
    unit = _unit(2)
    x = torch.randn(4, 16, 64)
    tiled = x.reshape(4, 4, 4, 64).flatten(0, 1)  # 4 rows of 4 tokens per sample, samples in order
    options = {"cond_or_uncond": [0, 1], "original_shape": [4, 4, 4, 4]}
    seen = []

    def record(q, k, v, extra):
        seen.append(q)
        return _noop_patch(q, k, v, extra)

    options = _options(record, original_shape=[4, 4, 4, 4])
    assert unit(tiled, context=x, value=x, transformer_options=options).shape == tiled.shape
    with torch.no_grad():
        unit.to_q_lora[1].up.weight.zero_()
    unit(tiled, context=x, value=x, transformer_options=options)
    changed = (seen[1] - seen[0]).abs().sum((1, 2))
    rows_of_frame_one = (torch.arange(16) // 4) % 2 == 1
    assert changed[~rows_of_frame_one].max() < 1e-6 < changed[rows_of_frame_one].min(), \
        "only the rows of frame 1 use frame 1's projection"


def test_a_patch_that_regroups_the_batch_is_refused_clearly():
    unit = _unit(2)
    x = torch.randn(4, 16, 64)
    options = {"cond_or_uncond": [0, 1], "original_shape": [4, 4, 4, 4], "sigmas": torch.tensor([1.0])}
    with pytest.raises(ValueError, match="attention patch turned the batch of 4 into 6 rows"):
        unit(x[:3].repeat(2, 1, 1), transformer_options=options)
    with pytest.raises(ValueError, match="batch size is 1, which is not a multiple of the 2 layers"):
        unit(x[:2], transformer_options={**options, "original_shape": [2, 4, 4, 4]})
