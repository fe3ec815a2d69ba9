"""How the transparent decoder and encoder run: number format, memory layout, passes at once.

Pure torch. The choice depends only on the kind of device and what it supports, so the GPU choice
can be made (and tested) on a CPU. Measured on a 2-core AVX512-BF16 CPU, one pass at 512 px
(bench/decode.py; the README has 8 augmentations at 512-1024 px): channels_last makes fp32 0.4x as long
within 3e-5 of the plain layout; bf16 halves that again but drifts up to 2.4e-2 (mean 3e-3). Keeping the
decoder's full-resolution parts in fp32 halves the drift but takes all of bf16's gain, so bf16 is all or
nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ._common import families

FP32, BF16, FP16 = "fp32", "bf16", "fp16"
PRECISIONS = (families.AUTO, FP32, BF16, FP16)
DTYPES = {FP32: torch.float32, BF16: torch.bfloat16, FP16: torch.float16}


class PrecisionError(ValueError):
    """A precision the device cannot run."""


@dataclass(frozen=True)
class DeviceTraits:
    """What the choice depends on: the kind of device ("cuda", "cpu", "mps", ...) and its number formats."""

    kind: str
    fp16_fast: bool  # the host would run models in fp16 here (mm.should_use_fp16)
    bf16_supported: bool  # bf16 arithmetic runs (natively or emulated) on this device


@dataclass(frozen=True)
class CodecSetup:
    """A decoder or encoder's number format and passes at once on one kind of device (the layout is always
    channels_last, see `apply_setup`)."""

    precision: str  # fp32, bf16 or fp16, never auto
    batch_passes: bool  # run several decoder passes at once (as memory allows); one at a time on CPUs

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.precision]


def choose_precision(requested: str, device: DeviceTraits) -> str:
    """`auto` is fp16 where the host runs models in fp16 (GPUs) and fp32 elsewhere.

    bf16 is not chosen automatically: on the CPU measured it is about 2x faster than fp32 but drifts
    up to 2.4e-2 on alpha, over the 1e-2 the automatic choice allows, so it stays the user's trade.
    """
    if requested not in PRECISIONS:
        raise PrecisionError(f"precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    if requested == families.AUTO:
        return FP16 if device.fp16_fast else FP32
    if requested == BF16 and not device.bf16_supported:
        raise PrecisionError(f"This {device.kind} device cannot compute in bf16. Set precision to 'auto', "
                             "'fp16' or 'fp32'.")
    return requested


def codec_setup(requested: str, device: DeviceTraits) -> CodecSetup:
    """Format and batching for `requested` precision on `device`."""
    return CodecSetup(precision=choose_precision(requested, device), batch_passes=device.kind != "cpu")


def apply_setup(module: nn.Module, setup: CodecSetup) -> nn.Module:
    """Cast a decoder or encoder in place for `setup` and lay it out channels_last; returns it.

    channels_last: faster convolutions on GPUs and, measured, on CPUs too (fp32 0.4x at 512 px); its
    CPU GroupNorm kernel drifts about 2e-5 from the plain layout, well inside the 1e-3 bar.
    """
    return module.to(setup.dtype).to(memory_format=torch.channels_last)
