"""Transparency codec training speed and memory per latent space, against the VAE's own encode and decode.

For each VAE (the tests' random host VAEs at their real layouts: SD, FLUX.1/SD3 `ae`, FLUX.2, and the Wan 2.1
VAE of Qwen-Image, narrowed) and size: training steps of `train_codec` at the published decoder width
(images per second after the first step, peak memory during the run: CUDA allocator, or resident memory
above the start on a CPU, each VAE and size in a process of its own so that memory freed by one run
does not hide the next one's), and the ratio of a training step's time per image to one plain VAE encode plus
decode of the same image, measured alternately in one process. Weights are random: speed and memory do not
depend on their values.

    .host/0.33.0/venv/bin/python -P bench/codec_training.py [--sizes 256 512] [--steps 3] [--batch 1]
                                                            [--vaes sd ae flux2 wan21] [--decoder-width 1.0]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import host_first  # ComfyUI in-process, before its modules and the pack

import torch
from comfyui_layer_sketch.layer_model import host_vae
from comfyui_layer_sketch.layer_model.codec_training import CodecTrainConfig
from comfyui_layer_sketch.layer_model.rgba_dataset import RGBAFolder
from comfyui_layer_sketch.layer_model.train_codec import train_codec
from comfyui_layer_sketch.layer_model.transparent_codec import CodecLayout, narrowed_channels
from support import fixtures, host_vaes
from support.shapes import write_rgba_folder

from bench._measure import PeakMemory

SPACE_OF = {"sd": "SD15", "ae": "SD3", "flux2": "Flux2", "wan21": "Wan21"}  # the space each VAE file trains as


def round_trip_seconds(vae: host_vae.HostVAE, size: int, batch: int) -> float:
    rgb = torch.rand(batch, 3, size, size)
    began = time.perf_counter()
    with torch.no_grad():
        vae.decode(vae.posterior(rgb)[0])
    return (time.perf_counter() - began) / batch


def train_once(vae: host_vae.HostVAE, folder: Path, size: int, args, work: Path) -> tuple[float, float]:
    """(images per second after the first step, peak MiB) of a fresh run."""
    space = vae.space
    layout = CodecLayout(space.channels, True, 0.0, space.downscale, narrowed_channels(args.decoder_width))
    config = CodecTrainConfig(steps=args.steps, batch_size=args.batch, save_every=10**6)
    output = Path(tempfile.mkdtemp(dir=work)) / "codec.safetensors"
    with PeakMemory() as peak, torch.inference_mode(False):
        report = train_codec(vae, vae.signature, space.name, RGBAFolder(str(folder), size), config, str(output),
                             layout)
    return report.run.images_per_second(args.batch), peak.mib


def measure(kind: str, size: int, args) -> None:
    """Print one table row: `kind`'s VAE trained at `size` px (in this process)."""
    loaded = host_vaes.host_vae(fixtures.cache_dir(), kind, inference=False)
    vae = host_vae.HostVAE(loaded, host_vae.place_vae(loaded, SPACE_OF[kind]))
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        folder = write_rgba_folder(work / "rgba", max(2, args.batch), size)
        round_trip_seconds(vae, size, args.batch)  # warm-up
        speed, memory = train_once(vae, folder, size, args, work)
        plain = round_trip_seconds(vae, size, args.batch)
    print(f"{vae.space.label:24} {size:5d} {speed:9.2f} {memory:9.0f} {1.0 / speed / plain:9.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--steps", type=int, default=3, help="training steps per run (the first is not timed)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--vaes", nargs="+", default=list(SPACE_OF), choices=list(SPACE_OF))
    parser.add_argument("--decoder-width", type=float, default=1.0)
    parser.add_argument("--in-process", action="store_true", help="measure here (one VAE and size) instead of "
                                                                    "in a child process per row")
    args = parser.parse_args()
    if args.in_process:
        measure(args.vaes[0], args.sizes[0], args)
        return
    print(f"{'space':24} {'px':>5} {'images/s':>9} {'peak MiB':>9} {'step/VAE':>9}", flush=True)
    for kind in args.vaes:
        for size in args.sizes:
            subprocess.run([sys.executable, "-P", __file__, "--in-process", "--vaes", kind, "--sizes", str(size),
                            "--steps", str(args.steps), "--batch", str(args.batch),
                            "--decoder-width", str(args.decoder_width)], check=True)


if __name__ == "__main__":
    main()
