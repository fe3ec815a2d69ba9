"""`python -m sketch_guidance.train`: train an edge predictor for a checkpoint from a folder of images.

Run it with ComfyUI's Python from the pack's folder (ComfyUI/custom_nodes/<pack>); ComfyUI itself is
found two folders up, or with --comfyui / COMFYUI_PATH. The same command runs under torchrun on several
GPUs or machines (see TORCHRUN).
"""

# The command's arguments and files only: train.py runs the command and imports this module, never the
# reverse (tests/unit/test_entry_points.py), so nothing here needs torch or the host.

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from ._common import host_path
from .train_config import TrainConfig

DEFAULTS = TrainConfig()
TORCHRUN = """several GPUs or machines: start the same command under PyTorch's torchrun, e.g.
  torchrun --nproc_per_node 2 -m sketch_guidance.train --checkpoint ... --images ...
  torchrun --nnodes 2 --nproc_per_node 4 --rdzv_backend c10d --rdzv_endpoint HOST:PORT \\
      -m sketch_guidance.train ...   (on each machine)
One process per GPU (nccl), or gloo with --cpu. --batch-size stays the images of each step in all: the
processes share them out, so the result does not depend on the number of processes, and a stopped run
resumes with any number. Rank 0 prints and writes the files."""


@dataclass(frozen=True)
class TrainCommand:
    """What the user asked for, with the checkpoint found and the output named."""

    checkpoint: str
    output: str
    images: str
    resolution: int
    layer_set: str
    comfyui: Path
    cpu: bool
    config: TrainConfig


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sketch_guidance.train", description=__doc__.split("\n\n")[0],
                                     epilog=TORCHRUN, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True,
                        help="checkpoint file, or its name inside MODELS/checkpoints when --models is given")
    parser.add_argument("--models", help="a ComfyUI models folder (checkpoints/ and edge_predictor/ inside)")
    parser.add_argument("--images", required=True, help="folder of training images; NAME.txt beside NAME.png "
                                                        "is its caption")
    parser.add_argument("--output", help="predictor file to write (default: MODELS/edge_predictor/"
                                         "<checkpoint>_edges.safetensors, or beside the checkpoint)")
    parser.add_argument("--steps", type=int, default=DEFAULTS.steps)
    parser.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size,
                        help="images per optimiser step, over all processes together under torchrun (each "
                             "process computes batch/N of them); the paper: 16")
    parser.add_argument("--lr", type=float, default=DEFAULTS.learning_rate, help="Adam learning rate")
    parser.add_argument("--resolution", type=int, default=512, help="training image size (square, multiple of 8)")
    parser.add_argument("--pixels-per-image", type=int, default=DEFAULTS.pixels_per_image,
                        help="latent pixels sampled per image and step (0: all)")
    parser.add_argument("--layer-set", default="paper", help="UNet layers the predictor reads")
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed)
    parser.add_argument("--save-every", type=int, default=DEFAULTS.save_every,
                        help="steps between saved states (a stopped run resumes from the last one)")
    parser.add_argument("--comfyui", default=os.environ.get("COMFYUI_PATH"), help="ComfyUI folder")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even if a GPU is present")
    return parser


def _paths(args) -> tuple[str, str]:
    checkpoint = args.checkpoint
    if args.models and not os.path.isfile(checkpoint):
        checkpoint = os.path.join(args.models, "checkpoints", checkpoint)
    if not os.path.isfile(checkpoint):
        raise SystemExit(f"Checkpoint not found: {checkpoint}")
    output = args.output
    if output is None:
        stem = os.path.splitext(os.path.basename(checkpoint))[0] + "_edges.safetensors"
        folder = os.path.join(args.models, "edge_predictor") if args.models else os.path.dirname(checkpoint)
        os.makedirs(folder, exist_ok=True)
        output = os.path.join(folder, stem)
    return checkpoint, output


def parse_command(argv: list[str] | None = None) -> TrainCommand:
    """The command line's request; exits with a message on bad arguments or a missing checkpoint."""
    args = _parser().parse_args(argv)
    checkpoint, output = _paths(args)
    config = TrainConfig(args.steps, args.batch_size, args.lr, args.seed, args.pixels_per_image, args.save_every)
    return TrainCommand(checkpoint, output, args.images, args.resolution, args.layer_set,
                        host_path.comfyui_root(args.comfyui, __file__), args.cpu, config)


def use_comfyui(command: TrainCommand) -> None:
    """Make the host importable and apply --cpu before anything imports comfy.model_management."""
    host_path.use_comfyui(command.comfyui, command.cpu)
