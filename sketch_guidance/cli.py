"""`python -m sketch_guidance.train`: train an edge predictor for a checkpoint from a folder of images.

Run it with ComfyUI's Python from the pack's folder (ComfyUI/custom_nodes/<pack>); ComfyUI itself is
found two folders up, or with --comfyui / COMFYUI_PATH.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .train import TrainConfig

DEFAULTS = TrainConfig()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sketch_guidance.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True,
                        help="checkpoint file, or its name inside MODELS/checkpoints when --models is given")
    parser.add_argument("--models", help="a ComfyUI models folder (checkpoints/ and edge_predictor/ inside)")
    parser.add_argument("--images", required=True, help="folder of training images; NAME.txt beside NAME.png "
                                                        "is its caption")
    parser.add_argument("--output", help="predictor file to write (default: MODELS/edge_predictor/"
                                         "<checkpoint>_edges.safetensors, or beside the checkpoint)")
    parser.add_argument("--steps", type=int, default=DEFAULTS.steps)
    parser.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size)
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


def _comfyui_root(given: str | None) -> Path:
    candidates = [Path(given)] if given else [Path(__file__).absolute().parents[3]]
    for root in candidates:
        if (root / "comfy" / "sd.py").is_file():
            return root
    raise SystemExit(f"ComfyUI not found at {candidates[0]}: pass --comfyui DIR or set COMFYUI_PATH.")


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


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    checkpoint, output = _paths(args)
    sys.path.insert(0, str(_comfyui_root(args.comfyui)))
    from comfy.cli_args import args as host_args

    host_args.cpu = host_args.cpu or args.cpu
    import torch
    from tqdm import tqdm

    from . import host
    from .dataset import DatasetError, ImageFolder
    from .train import train_predictor

    config = TrainConfig(args.steps, args.batch_size, args.lr, args.seed, args.pixels_per_image, args.save_every)
    try:
        dataset = ImageFolder(args.images, args.resolution)
    except DatasetError as err:
        raise SystemExit(str(err)) from err
    with torch.inference_mode(False):
        model, clip, vae = host.load_checkpoint(checkpoint)
        source = host.HostFeatureSource(model, vae, clip, args.layer_set)
        print(f"{source.base} checkpoint, {len(dataset)} images, {source.feature_channels} feature channels "
              f"({args.layer_set} layers) -> {output}")
        with tqdm(total=config.steps, unit="step") as bar:
            def progress(step: int, total: int, loss: float) -> None:
                bar.n = step
                bar.set_postfix(loss=f"{loss:.4f}")
                bar.refresh()

            report = train_predictor(source, dataset, config, output, progress)
    if report.resumed_from:
        print(f"resumed from step {report.resumed_from}")
    print(f"final loss {report.losses[-1]:.4f}; saved {output}")


if __name__ == "__main__":
    main()
