"""RGBA decode benchmark: the pack's batched decode against the plain one-variant-at-a-time loop.

Both run a published decoder architecture (random weights; speed does not depend on values): the SD1.5/SDXL
decoder (4-channel latent) and the FLUX port's (16-channel latent), side by side in one process, at each size
and augmentation count. Prints time per image, peak memory, the ratio fast/plain, and the largest output
difference (must stay below 1e-4).

    .host/0.30.0/venv/bin/python -P bench/decode.py [--bases SD FLUX] [--sizes 512 1024] [--augmentations 8 1]
                                                    [--repeats 2] [--sub-batch 8]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "devtools"))

import hostimport  # noqa: E402

hostimport.import_pack()

import comfy.model_management as mm  # noqa: E402
import psutil  # noqa: E402
import torch  # noqa: E402
from comfyui_layer_sketch.layer_model.transparent_codec import (  # noqa: E402
    FLUX_CODEC,
    SD_CODEC,
    decode_rgba,
    decode_rgba_reference,
)

LAYOUTS = {"SD": SD_CODEC, "FLUX": FLUX_CODEC}


class PeakMemory:
    """Peak GPU allocation on CUDA, else peak resident memory of this process above the start."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
        else:
            self.process = psutil.Process()
            self.start = self.peak = self.process.memory_info().rss
            self.running = True
            self.thread = threading.Thread(target=self._sample, daemon=True)
            self.thread.start()
        return self

    def _sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.005)

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self.running = False
            self.thread.join()

    @property
    def mib(self) -> float:
        return (self.peak - self.start) / 2**20


def timed(fn, device: torch.device, repeats: int):
    best, out, memory = float("inf"), None, None
    for _ in range(repeats):
        with PeakMemory(device) as peak:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            out = fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - start
        best, memory = min(best, elapsed), peak.mib
    return best, memory, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--sub-batch", type=int, default=None,
                        help="passes at once for the pack's decode (default: as the node picks, 1 on CPUs, 8 on GPUs)")
    parser.add_argument("--bases", nargs="+", choices=list(LAYOUTS), default=list(LAYOUTS))
    parser.add_argument("--augmentations", type=int, nargs="+", default=[8])
    options = parser.parse_args()

    device = mm.get_torch_device()
    if options.sub_batch is None:
        options.sub_batch = 1 if device.type == "cpu" else 8
    dtype = torch.float16 if mm.should_use_fp16(device) else torch.float32
    print(f"device {device}, {dtype}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"sub-batch {options.sub_batch}, best of {options.repeats}")
    print(f"{'base':>5} {'size':>6} {'aug':>4} {'pack s/img':>11} {'plain s/img':>12} {'ratio':>6} {'pack MiB':>9} "
          f"{'plain MiB':>10} {'max |diff|':>11}")
    for base in options.bases:
        bench_base(base, LAYOUTS[base], options, device, dtype)


def bench_base(base: str, layout, options, device: torch.device, dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    decoder = layout.decoder().eval().to(device, dtype)
    fast_decoder = layout.decoder().eval()
    fast_decoder.load_state_dict(decoder.state_dict())
    fast_decoder = fast_decoder.to(device, dtype)
    if device.type == "cuda":  # as host.load_codec does
        fast_decoder = fast_decoder.to(memory_format=torch.channels_last)
    channels = layout.latent_channels
    warm_rgb, warm_latent = torch.rand(1, 3, 64, 64), torch.randn(1, channels, 8, 8)  # first calls pay for set-up
    decode_rgba(fast_decoder, warm_rgb, warm_latent, 8, options.sub_batch)
    decode_rgba_reference(decoder, warm_rgb, warm_latent, 8)
    for size in options.sizes:
        rgb = torch.rand(1, 3, size, size)
        latent = torch.randn(1, channels, size // 8, size // 8)
        for count in options.augmentations:
            fast_s, fast_mib, fast = timed(partial(decode_rgba, fast_decoder, rgb, latent, count, options.sub_batch),
                                           device, options.repeats)
            plain_s, plain_mib, plain = timed(partial(decode_rgba_reference, decoder, rgb, latent, count),
                                              device, options.repeats)
            diff = (fast.cpu() - plain.cpu()).abs().max().item()
            print(f"{base:>5} {size:>6} {count:>4} {fast_s:>11.2f} {plain_s:>12.2f} {fast_s / plain_s:>6.2f} "
                  f"{fast_mib:>9.0f} {plain_mib:>10.0f} {diff:>11.2e}", flush=True)


if __name__ == "__main__":
    main()
