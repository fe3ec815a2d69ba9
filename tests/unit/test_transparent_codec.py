"""Padding, test-time augmentation and batching of the RGBA decode, on small decoders."""

from __future__ import annotations

import pytest
import torch
from comfyui_layer_sketch.layer_model.transparent_codec import (
    AUGMENTATIONS,
    apply_variant,
    decode_rgba,
    decode_rgba_reference,
    invert_variant,
    offset_latent,
    pad_to_multiple,
)
from comfyui_layer_sketch.layer_model.transparent_vae import DecoderConfig, TransparentDecoder

SMALL = DecoderConfig(block_channels=(8, 8, 8, 16, 16, 32, 32))


def small_decoder(seed: int = 0) -> TransparentDecoder:
    torch.manual_seed(seed)
    decoder = TransparentDecoder(SMALL).eval()
    with torch.no_grad():  # spread the output so that clipping and the median both matter
        decoder.conv_out.weight.mul_(8.0)
    return decoder


class PointwiseDecoder(torch.nn.Module):
    """Looks at each pixel alone, so it commutes with flips and rotations: TTA must change nothing."""

    config = SMALL

    def __init__(self) -> None:
        super().__init__()
        self.mix = torch.nn.Conv2d(3, 4, 1)
        self.latent_mix = torch.nn.Conv2d(4, 4, 1)

    def forward(self, rgb, latent):
        up = torch.nn.functional.interpolate(self.latent_mix(latent), scale_factor=8, mode="nearest")
        return torch.sigmoid(self.mix(rgb) + up)


def test_every_variant_inverts_exactly_and_they_are_distinct():
    x = torch.arange(2 * 3 * 5 * 7, dtype=torch.float32).reshape(2, 3, 5, 7)
    seen = []
    for variant in AUGMENTATIONS[8]:
        moved = apply_variant(x, variant)
        assert moved.shape[-2:] == ((7, 5) if variant[1] % 2 else (5, 7))
        assert torch.equal(invert_variant(moved, variant), x)
        seen.append(moved)
    assert len({tuple(t.flatten().tolist()) for t in seen}) == 8


def test_pointwise_decoder_gives_the_same_result_for_any_augmentation_count():
    torch.manual_seed(1)
    decoder = PointwiseDecoder().eval()
    rgb, latent = torch.rand(2, 3, 40, 72), torch.randn(2, 4, 5, 9)
    single = decode_rgba(decoder, rgb, latent, augmentations=1)
    for count in (2, 4, 8):
        torch.testing.assert_close(decode_rgba(decoder, rgb, latent, augmentations=count), single)


@pytest.mark.parametrize("size", [(64, 64), (96, 136), (40, 200)])
@pytest.mark.parametrize("sub_batch", [1, 3, 16])
def test_batched_decode_equals_one_pass_at_a_time(size, sub_batch):
    decoder = small_decoder().double()  # float64: any difference left is a logic error, not rounding
    h, w = size
    rgb, latent = torch.rand(2, 3, h, w), torch.randn(2, 4, h // 8, w // 8)
    fast = decode_rgba(decoder, rgb, latent, augmentations=8, sub_batch_size=sub_batch)
    slow = decode_rgba_reference(decoder, rgb, latent, augmentations=8)
    assert fast.shape == (2, 4, h, w)
    assert (fast - slow).abs().max() < 1e-6


def test_median_of_eight_is_the_lower_middle_value_per_pixel():
    decoder = small_decoder().double()
    rgb, latent = torch.rand(1, 3, 64, 64).double(), torch.randn(1, 4, 8, 8).double()
    out = decode_rgba(decoder, rgb, latent, augmentations=8)
    with torch.no_grad():
        passes = torch.stack([
            invert_variant(decoder(apply_variant(rgb, v), apply_variant(latent, v)).clamp(0, 1), v)
            for v in AUGMENTATIONS[8]
        ])
    ordered = passes.sort(dim=0).values
    lower_middle = ordered[3]
    alpha_first = torch.cat([out[:, 3:], out[:, :3]], dim=1)
    assert (alpha_first - lower_middle[0:1]).abs().max() < 1e-6
    assert (ordered[4] - ordered[3]).abs().max() > 1e-3, "the test needs variants that disagree"


def test_output_is_rgb_then_alpha_within_unit_range():
    decoder = small_decoder()
    out = decode_rgba(decoder, torch.rand(1, 3, 64, 64), torch.randn(1, 4, 8, 8), augmentations=2)
    assert out.shape[1] == 4 and out.min() >= 0 and out.max() <= 1
    with torch.no_grad():
        raw = decoder(torch.rand(1, 3, 64, 64), torch.randn(1, 4, 8, 8))
    assert raw.shape[1] == 4


def test_sizes_that_are_not_multiples_of_64_are_padded_and_cropped_back():
    rgb, latent = torch.rand(1, 3, 96, 136), torch.randn(1, 4, 12, 17)
    padded_rgb, padded_latent = pad_to_multiple(rgb, latent, 64)
    assert padded_rgb.shape[-2:] == (128, 192) and padded_latent.shape[-2:] == (16, 24)
    assert torch.equal(padded_rgb[..., :96, :136], rgb)
    assert torch.equal(padded_rgb[..., 96:, :136], rgb[..., 95:96, :].expand(-1, -1, 32, -1))
    out = decode_rgba(small_decoder(), rgb, latent, augmentations=8)
    assert out.shape == (1, 4, 96, 136)


def test_padding_does_not_change_the_visible_part_much_for_a_local_decoder():
    decoder = PointwiseDecoder().eval()
    rgb, latent = torch.rand(1, 3, 64, 64), torch.randn(1, 4, 8, 8)
    full = decode_rgba(decoder, rgb, latent, augmentations=8)
    part = decode_rgba(decoder, rgb[..., :48, :56], latent[..., :6, :7], augmentations=8)
    torch.testing.assert_close(part, full[..., :48, :56])


@pytest.mark.parametrize("latent_size, image_size, message", [
    ((8, 8), (72, 64), "latent is 8x8"),
    ((8, 8), (64, 64), None),
])
def test_latent_and_image_must_match(latent_size, image_size, message):
    rgb = torch.rand(1, 3, *image_size)
    latent = torch.randn(1, 4, *latent_size)
    if message is None:
        decode_rgba(PointwiseDecoder(), rgb, latent, augmentations=1)
    else:
        with pytest.raises(ValueError, match=message):
            decode_rgba(PointwiseDecoder(), rgb, latent, augmentations=1)


def test_batch_mismatch_and_bad_options_are_refused():
    with pytest.raises(ValueError, match="2 samples but the image batch has 1"):
        decode_rgba(PointwiseDecoder(), torch.rand(1, 3, 64, 64), torch.randn(2, 4, 8, 8))
    with pytest.raises(ValueError, match="augmentations must be one of"):
        decode_rgba(PointwiseDecoder(), torch.rand(1, 3, 64, 64), torch.randn(1, 4, 8, 8), augmentations=3)
    with pytest.raises(ValueError, match="sub_batch_size"):
        decode_rgba(PointwiseDecoder(), torch.rand(1, 3, 64, 64), torch.randn(1, 4, 8, 8), sub_batch_size=0)


def test_progress_counts_every_pass():
    counted = []
    decode_rgba(PointwiseDecoder(), torch.rand(3, 3, 64, 48), torch.randn(3, 4, 8, 6), augmentations=8,
                sub_batch_size=5, progress=counted.append)
    assert sum(counted) == 24 and max(counted) <= 5


def test_offset_latent_moves_by_std_units():
    mean, std, offset = torch.zeros(1, 4, 2, 2), torch.full((1, 4, 2, 2), 0.5), torch.ones(1, 4, 2, 2)
    assert torch.equal(offset_latent(mean, std, offset), torch.full((1, 4, 2, 2), 0.5))
