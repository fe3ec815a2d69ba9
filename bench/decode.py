"""RGBA decode benchmark: the pack's decode in each precision against the plain fp32 one-variant-at-a-time loop.

All run a published decoder architecture (random weights, output centred as in the tests): the SD1.5/SDXL
decoder (4-channel latent) and the FLUX port's (16-channel latent), alternating in one process, at each size
and augmentation count. Prints per precision (as the node resolves it, with its layout) the time per image,
peak memory, the ratio against the plain loop, and the largest and mean output difference.

    .host/0.30.0/venv/bin/python -P bench/decode.py [--bases SD FLUX] [--sizes 512 1024] [--augmentations 8 1]
                                                    [--repeats 2] [--sub-batch 8]
                                                    [--precisions auto bf16 fp16 fp32]
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import host_first  # ComfyUI in-process, before its modules and the pack

import comfy.model_management as mm
import torch
from comfyui_layer_sketch.layer_model import host
from comfyui_layer_sketch.layer_model.decode_precision import PRECISIONS, apply_setup, codec_setup
from comfyui_layer_sketch.layer_model.transparent_codec import (
    FLUX_CODEC,
    SD_CODEC,
    decode_rgba,
    decode_rgba_reference,
)

from bench._measure import PeakMemory

LAYOUTS = {"SD": SD_CODEC, "FLUX": FLUX_CODEC}


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
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=["auto", "bf16", "fp16"])
    options = parser.parse_args()

    device = mm.get_torch_device()
    if options.sub_batch is None:
        options.sub_batch = 1 if device.type == "cpu" else 8
    print(f"device {device} ({torch.backends.cpu.get_cpu_capability()}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, sub-batch {options.sub_batch}, best of {options.repeats}; "
          "plain = fp32, default layout, one variant at a time; runs alternate")
    print(f"{'base':>5} {'size':>5} {'aug':>3} {'precision':>15} {'s/img':>7} {'plain s':>8} {'ratio':>6} "
          f"{'MiB':>6} {'plain MiB':>9} {'max |d|':>9} {'mean |d|':>9}")
    for base in options.bases:
        bench_base(base, LAYOUTS[base], options, device)


def bench_base(base: str, layout, options, device: torch.device) -> None:
    torch.manual_seed(0)
    plain_decoder = layout.decoder().eval()
    with torch.no_grad():  # output centred on 0.5, as the tests do, so that alpha varies
        plain_decoder.conv_out.bias.fill_(0.5)
    plain_decoder = plain_decoder.to(device)
    traits = host.device_traits(device)
    setups = {}
    for precision in options.precisions:
        setup = codec_setup(precision, traits)
        decoder = layout.decoder().eval()
        decoder.load_state_dict(plain_decoder.state_dict())
        setups[f"{precision}:{setup.precision}/cl"] = apply_setup(decoder.to(device), setup)
    channels = layout.latent_channels
    warm_rgb, warm_latent = torch.rand(1, 3, 64, 64), torch.randn(1, channels, 8, 8)  # first calls pay for set-up
    for decoder in setups.values():
        decode_rgba(decoder, warm_rgb, warm_latent, 8, options.sub_batch)
    decode_rgba_reference(plain_decoder, warm_rgb, warm_latent, 8)
    for size in options.sizes:
        rgb = torch.rand(1, 3, size, size)
        latent = torch.randn(1, channels, size // 8, size // 8)
        for count in options.augmentations:
            rows = {name: [] for name in setups}
            plain_runs = []
            for _ in range(options.repeats):  # alternate, so that a noisy machine hits both alike
                plain_runs.append(timed(partial(decode_rgba_reference, plain_decoder, rgb, latent, count), device, 1))
                for name, decoder in setups.items():
                    rows[name].append(timed(partial(decode_rgba, decoder, rgb, latent, count, options.sub_batch),
                                            device, 1))
            plain_s, plain_mib, plain = min(plain_runs, key=lambda r: r[0])
            for name, runs in rows.items():
                fast_s, fast_mib, fast = min(runs, key=lambda r: r[0])
                diff = (fast.cpu() - plain.cpu()).abs()
                print(f"{base:>5} {size:>5} {count:>3} {name:>15} {fast_s:>7.2f} {plain_s:>8.2f} "
                      f"{fast_s / plain_s:>6.2f} {fast_mib:>6.0f} {plain_mib:>9.0f} {diff.max().item():>9.2e} "
                      f"{diff.mean().item():>9.2e}", flush=True)


if __name__ == "__main__":
    main()
