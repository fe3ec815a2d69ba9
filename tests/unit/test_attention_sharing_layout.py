"""The SD1.5 attention-sharing modules match the published files key for key, shape for shape."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from comfyui_layer_sketch.layer_model.attention_sharing import (
    SD15_ATTENTION_PATHS,
    AttentionSharingLayers,
    SharingState,
)
from support.attention_layout import FakeAttention

MANIFEST = Path(__file__).resolve().parent.parent / "data" / "sd15_attention_sharing.txt"
SD15_DIMS = [320, 320, 640, 640, 1280, 1280, 1280, 1280, 1280, 640, 640, 640, 320, 320, 320, 1280]


def _manifests() -> dict[str, tuple[dict[str, tuple[int, ...]], int]]:
    sections, current = {}, None
    for line in MANIFEST.read_text().splitlines():
        if line.startswith("==="):
            name = re.search(r"\((\w)\)", line).group(1)
            current = ({}, int(re.search(r"n_params=(\d+)", line).group(1)))
            sections[name] = current
        elif line.strip():
            key, shape = line.split(" ", 1)
            current[0][key] = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
    return sections


def sd15_attention_modules() -> list[FakeAttention]:
    return [FakeAttention(dim, dim if attn == "attn1" else 768) for dim in SD15_DIMS for attn in ("attn1", "attn2")]


@pytest.mark.parametrize("section, frames, control", [("a", 1, False), ("b", 3, False), ("c", 2, True)])
def test_state_dict_equals_published_manifest(section, frames, control):
    expected, n_params = _manifests()[section]
    layers = AttentionSharingLayers(sd15_attention_modules(), frames, control, SharingState())
    shapes = {k: tuple(v.shape) for k, v in layers.state_dict().items()}
    assert shapes == expected
    assert sum(v.numel() for v in layers.state_dict().values()) == n_params


def test_unit_order_follows_the_published_paths():
    assert len(SD15_ATTENTION_PATHS) == 32
    assert SD15_ATTENTION_PATHS[0] == "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1"
    assert SD15_ATTENTION_PATHS[13] == "diffusion_model.output_blocks.3.1.transformer_blocks.0.attn2"
    assert SD15_ATTENTION_PATHS[30] == "diffusion_model.middle_block.1.transformer_blocks.0.attn1"


def test_zero_weight_or_out_of_range_unit_is_the_original_attention():
    torch.manual_seed(0)
    original = FakeAttention(64, 64)
    state = SharingState(weight=0.0)
    layers = AttentionSharingLayers([original], 3, False, state)
    x = torch.randn(6, 10, 64)
    unit = layers.units[0]
    expected = original(x)
    torch.testing.assert_close(unit(x, transformer_options={}), expected)
    state.weight, state.sigma_start, state.sigma_end = 1.0, 4.0, 1.0  # active for sigmas in [1, 4]
    late = {"sigmas": torch.tensor([0.5])}
    torch.testing.assert_close(unit(x, transformer_options=late), expected)
    during = {"sigmas": torch.tensor([2.0]), "cond_or_uncond": [0, 1]}
    # active units take any keyword the host may add, and change the result
    assert (unit(x, transformer_options=during, some_future_keyword=1) - expected).abs().max() > 1e-3


def test_uncond_mark_follows_the_hosts_chunks():
    mark = SharingState.uncond_mark({"cond_or_uncond": [1, 0]}, 6)
    assert mark.tolist() == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    assert SharingState.uncond_mark({}, 6) is None


def test_single_frame_shortcut_equals_attention_over_one_frame():
    torch.manual_seed(0)
    original = FakeAttention(64, 64)
    layers = AttentionSharingLayers([original], 1, False, SharingState())
    unit = layers.units[0]
    x = torch.randn(2, 10, 64)
    fast = unit(x, transformer_options={})
    unit.frames = 2  # the general path, on 2 "frames" that are the same sample: [frames, rows, tokens, c]
    with torch.no_grad():
        hidden = unit._temporal(torch.stack([x[:1], x[:1]]))
    unit.frames = 1
    single = unit._temporal(x[None, :1])
    torch.testing.assert_close(single[0], hidden[0], atol=1e-5, rtol=1e-5)
    assert fast.shape == x.shape
