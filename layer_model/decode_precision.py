"""How the transparent decoder and encoder run: number format, memory layout, passes at once.

Pure torch. The choice depends only on the kind of device and what it supports, so the GPU choice
can be made (and tested) on a CPU. Measured on a 2-core AVX512-BF16 CPU, one pass at 512 px
(bench/decode.py; the README has 8 augmentations at 512-1024 px): channels_last makes fp32 0.4x as long
within 3e-5 of the plain layout; bf16 halves that again but drifts up to 2.4e-2 (mean 3e-3). Keeping the
decoder's full-resolution parts in fp32 halves the drift but takes all of bf16's gain, so bf16 is all or
nothing.
"""

from __future__ import annotations

import functools
import logging
import platform
from dataclasses import dataclass
from pathlib import Path

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
    bf16_native: bool = True  # in hardware; else torch emulates it, slower than fp32 (`cpu_has_native_bf16`)


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


def emulated_bf16_warning(precision: str, device: DeviceTraits) -> str | None:
    """What to tell the user who runs `precision` on `device`: bf16 pays off only with bf16 arithmetic in
    hardware. Without it torch emulates bf16, and on a CPU without bf16 instructions the decode took 1.30x
    the time of the older pack's fp32 decode, against 0.74x for `auto`."""
    if precision != BF16 or device.bf16_native:
        return None
    where = "CPU without bf16 instructions (x86: AVX512_BF16 or AMX; Arm: BF16)" if device.kind == "cpu" else \
        f"{device.kind} device without bf16 arithmetic"
    return f"precision 'bf16' on a {where} is emulated, slower than fp32 and less exact: set precision to 'auto'."


def codec_setup(requested: str, device: DeviceTraits) -> CodecSetup:
    """Format and batching for `requested` precision on `device`; warns (log) where bf16 would be emulated."""
    precision = choose_precision(requested, device)
    warning = emulated_bf16_warning(precision, device)
    if warning:
        logging.getLogger(__name__).warning("Layer Diffuse: %s", warning)
    return CodecSetup(precision=precision, batch_passes=device.kind != "cpu")


CPU_BF16_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}  # /proc/cpuinfo: x86 `flags`, Arm `Features`


def bf16_in_cpuinfo(text: str) -> bool | None:
    """Whether /proc/cpuinfo's first CPU lists bf16 instructions; None without a flags or Features line."""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return bool(CPU_BF16_FLAGS & set(value.split()))
    return None


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware: /proc/cpuinfo on Linux, else torch's x86 checks.

    Where neither tells (an Arm CPU outside Linux, a torch without those checks) it is taken as native: no
    warning on a guess.
    """
    try:
        found = bf16_in_cpuinfo(Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace"))
    except OSError:
        found = None
    if found is not None:
        return found
    if platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86"):
        checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
        if all(check is not None for check in checks):
            return any(check() for check in checks)
    return True


def apply_setup(module: nn.Module, setup: CodecSetup) -> nn.Module:
    """Cast a decoder or encoder in place for `setup` and lay it out channels_last; returns it.

    channels_last: faster convolutions on GPUs and, measured, on CPUs too (fp32 0.4x at 512 px); its
    CPU GroupNorm kernel drifts about 2e-5 from the plain layout, well inside the 1e-3 bar.
    """
    return module.to(setup.dtype).to(memory_format=torch.channels_last)
