"""Edge-predictor training throughput with 1 and with 2 processes under torchrun, as the command runs it.

Runs `torchrun --nproc_per_node N -m sketch_guidance.train` for N = 1 and 2 in alternation (the same global
batch and seed each time) and reads the images per second that the command reports over its steps after
the first (which also encodes the images). On the CPU each process gets cores / N threads (gloo); with
CUDA GPUs each process takes one GPU (nccl) and `--cpu` is left out. The checkpoint is the tests' cached
random SD1.5 (`--full`) or its slim variant (320 channels on every UNet level; the default).

    .host/0.30.0/venv/bin/python -P bench/train_ddp.py [--size 64] [--images 8] [--batch 8] [--steps 4] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import host_first  # ComfyUI in-process, before its modules and the pack

import hostenv
import torch
from support import fixtures, sketches
from support import torchrun as launch

ROOT = Path(__file__).resolve().parent.parent
CACHE = fixtures.cache_dir()
SPEED = re.compile(r"([0-9.]+) images/s")


def images_per_second(processes: int, checkpoint: Path, images: Path, output: Path, args, gpu: bool) -> float:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
               "--master_port", str(launch.free_port()), "-m", "sketch_guidance.train",
               "--comfyui", str(hostenv.COMFY_DIR),
               "--checkpoint", str(checkpoint), "--images", str(images), "--output", str(output),
               "--steps", str(args.steps), "--batch-size", str(args.batch), "--resolution", str(args.size),
               "--save-every", str(args.steps), *([] if gpu else ["--cpu"])]
    env = {k: v for k, v in hostenv.host_environment().items() if k != "OMP_NUM_THREADS"}  # the command decides
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"{processes} process(es) failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return float(SPEED.findall(done.stdout)[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=64, help="training resolution (px)")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8, help="global batch (images per step, all processes)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2, help="alternating 1- and 2-process runs")
    parser.add_argument("--full", action="store_true", help="the full-size SD1.5 checkpoint")
    args = parser.parse_args()
    gpu = torch.cuda.device_count() >= 2
    checkpoint = fixtures.sd15_checkpoint(CACHE, slim=not args.full)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"{checkpoint.name}, {args.size} px, {args.images} images, global batch {args.batch}, {args.steps} steps; "
          + ("2 GPUs (nccl)" if gpu else f"CPU (gloo), {cores} cores shared out among the processes"))
    speeds: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as scratch:
        images = sketches.write_image_folder(Path(scratch) / "images", args.images, args.size)
        for round_ in range(args.rounds):
            for processes in (1, 2):
                output = Path(scratch) / f"edges_{round_}_{processes}.safetensors"
                speeds[processes].append(images_per_second(processes, checkpoint, images, output, args, gpu))
            print(f"round {round_ + 1}: 1 process {speeds[1][-1]:.2f} images/s, 2 processes {speeds[2][-1]:.2f} "
                  f"images/s, ratio {speeds[2][-1] / speeds[1][-1]:.2f}")
    ratios = [two / one for one, two in zip(speeds[1], speeds[2], strict=True)]
    print(f"median: 1 process {statistics.median(speeds[1]):.2f} images/s, 2 processes "
          f"{statistics.median(speeds[2]):.2f} images/s; 2 vs 1: {statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main()
