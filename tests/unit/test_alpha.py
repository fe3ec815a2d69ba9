"""Colour fill under transparency, grey compositing and the checkerboard preview."""

from __future__ import annotations

import pytest
import torch
from comfyui_layer_sketch.layer_model.alpha import (
    checkerboard,
    composite_on_grey,
    fill_transparent_rgb,
    preview_on_checkerboard,
)


def _half_red_image(h: int = 32, w: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    rgb = torch.rand(1, 3, h, w)  # garbage colour under the transparent half
    rgb[:, :, :, : w // 2] = torch.tensor([1.0, 0.0, 0.0])[:, None, None]
    alpha = torch.zeros(1, 1, h, w)
    alpha[..., : w // 2] = 1.0
    return rgb, alpha


def test_visible_pixels_keep_their_colour_exactly():
    rgb, alpha = _half_red_image()
    filled = fill_transparent_rgb(rgb, alpha)
    assert torch.equal(filled[..., :32], rgb[..., :32])


def test_invisible_pixels_take_the_colour_of_the_visible_region():
    rgb, alpha = _half_red_image()
    filled = fill_transparent_rgb(rgb, alpha)
    hidden = filled[..., 32:]
    # The garbage colour underneath is gone: the whole transparent half is red.
    assert hidden[:, 0].min() > 0.99 and hidden[:, 1:].max() < 0.01


def test_fill_bleeds_the_nearest_colour_outward():
    rgb = torch.zeros(1, 3, 32, 96)
    alpha = torch.zeros(1, 1, 32, 96)
    rgb[:, 0, :, :8], alpha[..., :8] = 1.0, 1.0  # red strip on the left
    rgb[:, 2, :, -8:], alpha[..., -8:] = 1.0, 1.0  # blue strip on the right
    filled = fill_transparent_rgb(rgb, alpha)
    near_left, near_right = filled[0, :, 16, 12], filled[0, :, 16, 83]
    assert near_left[0] > near_left[2] + 0.3, near_left
    assert near_right[2] > near_right[0] + 0.3, near_right


def test_partial_alpha_keeps_the_premultiplied_colour():
    rgb = torch.full((1, 3, 16, 16), 0.8)
    alpha = torch.full((1, 1, 16, 16), 0.5)
    filled = fill_transparent_rgb(rgb, alpha)
    torch.testing.assert_close(filled, rgb)  # the bled colour is the same 0.8 everywhere


def test_fully_transparent_image_becomes_neutral_grey():
    filled = fill_transparent_rgb(torch.rand(2, 3, 24, 40), torch.zeros(2, 1, 24, 40))
    torch.testing.assert_close(filled, torch.full_like(filled, 0.5))


def test_pyramid_factor_must_shrink():
    with pytest.raises(ValueError, match="factor"):
        fill_transparent_rgb(torch.rand(1, 3, 8, 8), torch.ones(1, 1, 8, 8), factor=1.0)


def test_composite_on_grey():
    rgb = torch.tensor([1.0, 0.0, 0.5])[None, :, None, None]
    torch.testing.assert_close(composite_on_grey(rgb, torch.zeros(1, 1, 1, 1)), torch.full((1, 3, 1, 1), 0.5))
    torch.testing.assert_close(composite_on_grey(rgb, torch.ones(1, 1, 1, 1)), rgb)


def test_checkerboard_alternates_in_squares():
    board = checkerboard(32, 48, square=16)[0, 0]
    assert board[0, 0] == board[15, 15] != board[0, 16] == board[16, 0]
    assert board[16, 16] == board[0, 0]


def test_preview_shows_the_board_only_where_transparent():
    rgb = torch.ones(1, 3, 32, 32)
    alpha = torch.zeros(1, 1, 32, 32)
    alpha[..., :16] = 1.0
    preview = preview_on_checkerboard(rgb, alpha)
    assert torch.equal(preview[..., :16], rgb[..., :16])
    assert preview[..., 16:].unique().numel() == 2
