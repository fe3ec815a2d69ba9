"""RGBA VAE decode benchmark: each RGBA VAE (AlphaVAE for FLUX.1, flux2-klein-alpha's for FLUX.2; random weights
in the published layouts, loaded as the pack loads them) against the host's RGB VAE of the same family and
weights, alternating in one process, at each size. Prints per VAE and size the seconds per image and the peak
memory of each, and the RGBA decode's time as a ratio of the RGB one's.

    .host/0.33.0/venv/bin/python -P bench/rgba_vae.py [--kinds alphavae flux2] [--sizes 1024] [--repeats 2]
"""

from __future__ import annotations

import argparse
import time

import host_first  # ComfyUI in-process, before its modules and the pack

import comfy.sd
import safetensors.torch
import torch
from comfyui_layer_sketch.layer_model import host_rgba_vae
from support import fixtures, rgba_vaes

from bench._measure import PeakMemory

LABELS = {"alphavae": "AlphaVAE (FLUX.1)", "flux2": "flux2-klein-alpha (FLUX.2)"}


def vaes(kind: str) -> tuple[comfy.sd.VAE, comfy.sd.VAE]:
    """(the RGBA VAE, the host's RGB VAE of the same weights), both the host's own VAE objects."""
    state = safetensors.torch.load_file(str(rgba_vaes.rgba_vae_file(fixtures.cache_dir(), kind, "host")))
    return host_rgba_vae.vae_from_state(state, kind), comfy.sd.VAE(sd=rgba_vaes.rgb_counterpart(state))


def timed(decode, latent: torch.Tensor) -> tuple[float, float]:
    """(seconds, peak MiB) of one decode."""
    with PeakMemory() as peak:
        began = time.perf_counter()
        decode(latent)
        seconds = time.perf_counter() - began
    return seconds, peak.mib


def measure(kind: str, size: int, repeats: int) -> None:
    rgba, rgb = vaes(kind)
    side = size // rgba.downscale_ratio
    latent = torch.randn(1, rgba.latent_channels, side, side, generator=torch.Generator().manual_seed(0))
    decoders = {"rgba": lambda z: host_rgba_vae.decode_rgba(rgba, z), "rgb": rgb.decode}
    for decode in decoders.values():  # warm-up: first loads, allocator
        decode(latent)
    best = {name: (float("inf"), 0.0) for name in decoders}
    for _ in range(repeats):  # alternating, so that a noisy machine weighs on both alike
        for name, decode in decoders.items():
            seconds, mib = timed(decode, latent)
            best[name] = (min(best[name][0], seconds), max(best[name][1], mib))
    (rgba_s, rgba_mib), (rgb_s, rgb_mib) = best["rgba"], best["rgb"]
    print(f"{LABELS[kind]:28} {size:5d} {rgba_s:9.2f} {rgba_mib:9.0f} {rgb_s:9.2f} {rgb_mib:9.0f} "
          f"{rgba_s / rgb_s:7.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kinds", nargs="+", default=list(LABELS), choices=list(LABELS))
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    print(f"{'RGBA VAE':28} {'px':>5} {'RGBA s':>9} {'RGBA MiB':>9} {'RGB s':>9} {'RGB MiB':>9} {'ratio':>7}",
          flush=True)
    with torch.inference_mode():
        for kind in args.kinds:
            for size in args.sizes:
                measure(kind, size, args.repeats)


if __name__ == "__main__":
    main()
