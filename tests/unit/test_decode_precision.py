"""Decoder number formats and layouts, and the sorting-network median, on the published decoder layout."""

from __future__ import annotations

import itertools
import logging

import pytest
import torch
from comfyui_layer_sketch.layer_model.decode_precision import (
    CodecSetup,
    DeviceTraits,
    PrecisionError,
    apply_setup,
    bf16_in_cpuinfo,
    codec_setup,
    emulated_bf16_warning,
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
CPU_WITHOUT_BF16 = DeviceTraits(kind="cpu", fp16_fast=False, bf16_supported=True, bf16_native=False)  # e.g. AVX2
TURING_GPU = DeviceTraits(kind="cuda", fp16_fast=True, bf16_supported=True, bf16_native=False)  # emulated bf16
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


def test_bf16_warns_only_where_the_device_would_emulate_it():
    """bf16 pays off only with bf16 arithmetic: emulated, it took 1.30x the older pack's fp32 decode on a CPU."""
    warning = emulated_bf16_warning("bf16", CPU_WITHOUT_BF16)
    assert "CPU without bf16 instructions (x86: AVX512_BF16 or AMX" in warning and "set precision to 'auto'" in warning
    assert "cuda device without bf16 arithmetic" in emulated_bf16_warning("bf16", TURING_GPU)
    assert emulated_bf16_warning("bf16", CPU) is None and emulated_bf16_warning("bf16", CUDA) is None
    for precision in ("fp32", "fp16"):
        assert emulated_bf16_warning(precision, CPU_WITHOUT_BF16) is None


def test_the_set_up_logs_the_emulated_bf16_warning_and_still_runs_it(caplog):
    with caplog.at_level(logging.WARNING):
        assert codec_setup("bf16", CPU_WITHOUT_BF16) == CodecSetup("bf16", batch_passes=False)
    assert [record.levelname for record in caplog.records] == ["WARNING"]
    assert "is emulated, slower than fp32" in caplog.records[0].getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        for precision, device in (("bf16", CPU), ("auto", CPU_WITHOUT_BF16), ("fp32", CPU_WITHOUT_BF16)):
            codec_setup(precision, device)
    assert not caplog.records


@pytest.mark.parametrize(("cpuinfo", "native"), [
    ("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_bf16 avx512_vnni\n", True),  # Zen 4, Cooper Lake
    ("flags\t\t: fpu avx2 avx512f amx_bf16 amx_tile amx_int8\n", True),  # Sapphire Rapids
    ("flags\t\t: fpu sse2 avx avx2 fma avx512f avx512bw avx512_vnni\n", False),  # AVX512 without BF16
    ("flags\t\t: fpu sse2 avx avx2 fma\nflags\t\t: avx512_bf16\n", False),  # the first CPU's line counts
    ("processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n", True),  # Arm with FEAT_BF16
    ("processor\t: 0\nFeatures\t: fp asimd evtstrm crc32\n", False),
    ("processor\t: 0\nvendor_id\t: GenuineIntel\n", None),  # no flags: the caller asks torch instead
])
def test_bf16_instructions_are_read_from_the_cpu_flags(cpuinfo, native):
    assert bf16_in_cpuinfo(cpuinfo) is native
