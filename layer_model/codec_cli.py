"""`python -m layer_model.train_codec`: train a latent transparency codec for a VAE from a folder of RGBA images.

Run it with ComfyUI's Python from the pack's folder (ComfyUI/custom_nodes/<pack>); ComfyUI itself is
found two folders up, or with --comfyui / COMFYUI_PATH. The same command runs under torchrun on several
GPUs or machines (see TORCHRUN).
"""

# The command's arguments only: train_codec.py runs the command and imports this module, never the reverse,
# so nothing here needs torch or the host.

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from ._common import host_path

TORCHRUN = """several GPUs or machines: start the same command under PyTorch's torchrun, e.g.
  torchrun --nproc_per_node 2 -m layer_model.train_codec --vae ... --data ... --out ...
  torchrun --nnodes 2 --nproc_per_node 4 --rdzv_backend c10d --rdzv_endpoint HOST:PORT \\
      -m layer_model.train_codec ...   (on each machine)
One process per GPU (nccl), or gloo with --cpu. --batch-size stays the images of each step in all: the
processes share them out, so the result does not depend on the number of processes, and a stopped run
resumes with any number. Rank 0 prints and writes the files."""
LATENT_FORMATS = ("auto", "SD15", "SDXL", "Flux", "SD3", "Flux2", "Wan21")


@dataclass(frozen=True)
class CodecCommand:
    vae: str
    latent_format: str
    data: str
    output: str
    resolution: int
    resume: bool
    decoder_width: float
    comfyui: Path
    cpu: bool
    settings: dict  # CodecTrainConfig's fields (built where torch is imported)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m layer_model.train_codec", description=__doc__.split("\n\n")[0],
                                     epilog=TORCHRUN, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vae", required=True, help="the VAE file the codec is trained for (safetensors, as "
                                                     "ComfyUI's VAE loader reads it)")
    parser.add_argument("--latent-format", default="auto", choices=LATENT_FORMATS,
                        help="the VAE's latent space, where its shape does not tell (SD15/SDXL share one shape, "
                             "Flux/SD3 another)")
    parser.add_argument("--data", required=True, help="folder of transparent images (PNG, WebP, TIFF with alpha)")
    parser.add_argument("--out", required=True, help="codec file to write (.safetensors)")
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--batch-size", type=int, default=8,
                        help="images per step, over all processes together under torchrun")
    parser.add_argument("--resolution", type=int, default=512, help="training crop size (a multiple of 64)")
    parser.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate (1e-5 to fine-tune)")
    parser.add_argument("--init", choices=("none", "published"), default="none",
                        help="start from scratch, or from the published codec of the latent space")
    parser.add_argument("--identity-weight", type=float, default=1.0, help="the identity loss's weight (paper: 1)")
    parser.add_argument("--discriminator-weight", type=float, default=0.01,
                        help="the PatchGAN loss's weight (paper: 0.01; 0 trains without a discriminator)")
    parser.add_argument("--discriminator-start", type=int, default=1000,
                        help="steps of reconstruction alone before the PatchGAN loss joins (default %(default)s)")
    parser.add_argument("--offset-budget", type=float, default=1.0,
                        help="how far the offset may move the latent, in units of the latent's own spread, before a "
                             "penalty holds it back (default %(default)s)")
    parser.add_argument("--decoder-width", type=float, default=1.0,
                        help="the transparent decoder's width against the published one (1.0: its 104 M "
                             "parameters; smaller trains and decodes faster)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save-every", type=int, default=250,
                        help="steps between saved states (a stopped run resumes from the last one)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run saved beside --out (an error if there is none); a run of the same "
                             "settings also resumes without it")
    parser.add_argument("--comfyui", default=os.environ.get("COMFYUI_PATH"), help="ComfyUI folder")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even if a GPU is present")
    return parser


def parse_command(argv: list[str] | None = None) -> CodecCommand:
    """The command line's request; exits with a message on bad arguments or a missing VAE file."""
    args = _parser().parse_args(argv)
    if not os.path.isfile(args.vae):
        raise SystemExit(f"VAE file not found: {args.vae}")
    if not args.out.endswith(".safetensors"):
        raise SystemExit(f"--out must name a .safetensors file, got {args.out}")
    settings = {"steps": args.steps, "batch_size": args.batch_size, "learning_rate": args.lr, "seed": args.seed,
                "init": args.init, "identity_weight": args.identity_weight,
                "discriminator_weight": args.discriminator_weight, "discriminator_start": args.discriminator_start,
                "offset_budget": args.offset_budget, "save_every": args.save_every}
    return CodecCommand(args.vae, args.latent_format, args.data, args.out, args.resolution, args.resume,
                        args.decoder_width, host_path.comfyui_root(args.comfyui, __file__), args.cpu, settings)
