"""Decoder number formats and layouts, and the sorting-network median, on the published decoder layout."""

from __future__ import annotations

import itertools

import pytest
import torch
from comfyui_layer_sketch.layer_model.decode_precision import (
    CodecSetup,
    DeviceTraits,
    PrecisionError,
    apply_setup,
    codec_setup,
)
from comfyui_layer_sketch.layer_model.median import SORTING_NETWORKS, lower_median
from comfyui_layer_sketch.layer_model.transparent_codec import (
    SD_CODEC,
    decode_rgba,
    decode_rgba_reference,
    encode_offset,
    encoder_inputs,
)

CPU = DeviceTraits(kind="cpu", fp16_fast=False, bf16_supported=True)
CUDA = DeviceTraits(kind="cuda", fp16_fast=True, bf16_supported=True)
OLD_GPU = DeviceTraits(kind="cuda", fp16_fast=True, bf16_supported=False)
# Largest output change against fp32 allowed per format (alpha and RGB, which lie in [0, 1]).
MAX_DRIFT = {"fp32": 1e-3, "fp16": 1e-2, "bf16": 3e-2}
MEAN_DRIFT = {"fp32": 1e-5, "fp16": 1e-3, "bf16": 4e-3}


@pytest.mark.parametrize("count", sorted(SORTING_NETWORKS))
def test_sorting_networks_sort_every_zero_one_input(count):
    # The 0-1 principle: a network that sorts all 0/1 inputs sorts every input.
    for bits in itertools.product((0.0, 1.0), repeat=count):
        values = [torch.tensor(b) for b in bits]
        for i, j in SORTING_NETWORKS[count]:
            values[i], values[j] = torch.minimum(values[i], values[j]), torch.maximum(values[i], values[j])
        assert [float(v) for v in values] == sorted(bits)


@pytest.mark.parametrize("count", sorted(SORTING_NETWORKS))
def test_lower_median_equals_torch_median_with_ties(count):
    generator = torch.Generator().manual_seed(count)
    stack = torch.randint(0, 4, (count, 2, 4, 9, 7), generator=generator).float()  # many ties
    torch.testing.assert_close(lower_median(stack.unbind(0)), torch.median(stack, dim=0).values, rtol=0, atol=0)


def test_lower_median_refuses_a_count_without_a_network():
    with pytest.raises(ValueError, match="takes"):
        lower_median([torch.zeros(2)] * 3)


def test_auto_is_fp16_where_the_host_runs_fp16_and_fp32_on_cpus():
    assert codec_setup("auto", CUDA) == CodecSetup("fp16", batch_passes=True)
    assert codec_setup("auto", CPU) == CodecSetup("fp32", batch_passes=False)
    assert codec_setup("bf16", CPU).dtype == torch.bfloat16
    assert codec_setup("fp32", CUDA).batch_passes


def test_impossible_or_unknown_precisions_say_what_to_choose():
    with pytest.raises(PrecisionError, match="cannot compute in bf16. Set precision to 'auto'"):
        codec_setup("bf16", OLD_GPU)
    with pytest.raises(PrecisionError, match="must be one of auto, fp32, bf16, fp16"):
        codec_setup("int8", CPU)


def test_reduced_precisions_cast_everything_and_lay_it_out_channels_last():
    decoder = apply_setup(SD_CODEC.decoder(), codec_setup("bf16", CPU))
    assert {p.dtype for p in decoder.parameters()} == {torch.bfloat16}
    conv = decoder.down_blocks[3].resnets[0].conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()


@pytest.fixture(scope="module")
def published_decoder_and_input():
    """The published decoder layout, default init, output centred on 0.5 so alpha varies; a 128 px input."""
    torch.manual_seed(0)
    decoder = SD_CODEC.decoder().eval()
    with torch.no_grad():
        decoder.conv_out.bias.fill_(0.5)
    generator = torch.Generator().manual_seed(1)
    rgb, latent = torch.rand(1, 3, 128, 128, generator=generator), torch.randn(1, 4, 16, 16, generator=generator)
    return decoder, rgb, latent, decode_rgba_reference(decoder, rgb, latent, augmentations=8)


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_each_precision_stays_within_its_drift_of_the_plain_fp32_loop(published_decoder_and_input, precision):
    decoder, rgb, latent, reference = published_decoder_and_input
    fast = SD_CODEC.decoder().eval()
    fast.load_state_dict(decoder.state_dict())
    apply_setup(fast, codec_setup(precision, CPU))
    out = decode_rgba(fast, rgb, latent, augmentations=8, sub_batch_size=1)
    drift = (out - reference).abs()
    assert drift.max() <= MAX_DRIFT[precision] and drift.mean() <= MEAN_DRIFT[precision], \
        f"{precision}: max {drift.max():.2e}, mean {drift.mean():.2e}"
    assert out[:, 3].std() > 0.05, "alpha must vary for the comparison to mean anything"
    if precision != "fp32":
        assert drift.max() > 0, "the reduced format must actually have been used"


def test_the_encoder_runs_in_the_gpu_set_up_on_this_cpu():
    """The transparent encoder follows the same choice (fp16, channels_last on CUDA); its offset comes back fp32."""
    torch.manual_seed(2)
    reference_encoder = SD_CODEC.encoder().eval()
    gpu_encoder = SD_CODEC.encoder().eval()
    gpu_encoder.load_state_dict(reference_encoder.state_dict())
    apply_setup(gpu_encoder, codec_setup("auto", CUDA))
    assert {p.dtype for p in gpu_encoder.parameters()} == {torch.float16}
    rgb, alpha = torch.rand(2, 3, 64, 64), torch.rand(2, 1, 64, 64)
    _, encoder_input = encoder_inputs(rgb, alpha, SD_CODEC)
    reference = encode_offset(reference_encoder, encoder_input)
    offset = encode_offset(gpu_encoder, encoder_input)
    assert offset.dtype == torch.float32 and offset.shape == (2, 4, 8, 8)
    assert 0 < (offset - reference).abs().max() <= 1e-2 * reference.abs().max()
