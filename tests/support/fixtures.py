"""Generated test fixtures: weight files in the published formats with random values, checkpoints.

All are deterministic and cached by name; a file is written to a temporary name and renamed, so an
interrupted run never leaves a broken fixture behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import safetensors.torch
import torch
from comfyui_layer_sketch.common import files
from comfyui_layer_sketch.layer_model.transparent_vae import TransparencyEncoder, TransparentDecoder

HERE = Path(__file__).resolve().parent


def cache_dir() -> Path:
    """Where generated fixtures are kept between runs, outside the repo (LAYER_SKETCH_TEST_CACHE overrides)."""
    path = Path(os.environ.get("LAYER_SKETCH_TEST_CACHE", Path.home() / ".cache" / "comfyui-layer-sketch-tests"))
    path.mkdir(parents=True, exist_ok=True)
    return path
SD15_CHECKPOINT = "random_sd15.safetensors"


def _save(state: dict[str, torch.Tensor], path: Path) -> Path:
    with files.atomic_path(path) as tmp:
        safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, tmp)
    return path


def random_decoder_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """The published decoder's keys and shapes, fp16, with PyTorch's default random init."""
    torch.manual_seed(seed)
    decoder = TransparentDecoder()
    return {k: v.half() for k, v in decoder.state_dict().items()}


def random_encoder_state(seed: int = 0, zero_last: bool = False) -> dict[str, torch.Tensor]:
    """The published encoder's keys and shapes; `zero_last` mimics its zero-initialised output conv."""
    torch.manual_seed(seed)
    encoder = TransparencyEncoder()
    if zero_last:
        torch.nn.init.zeros_(encoder.blocks[-1].weight)
        torch.nn.init.zeros_(encoder.blocks[-1].bias)
    return {k: v.half() for k, v in encoder.state_dict().items()}


def cached_file(cache: Path, name: str, make) -> Path:
    path = cache / name
    if not path.exists():
        _save(make(), path)
    return path


def decoder_file(cache: Path, seed: int = 0) -> Path:
    return cached_file(cache, f"random_decoder_s{seed}.safetensors", lambda: random_decoder_state(seed))


def encoder_file(cache: Path, seed: int = 0) -> Path:
    return cached_file(cache, f"random_encoder_s{seed}.safetensors", lambda: random_encoder_state(seed))


def truncated_copy(source: Path, target: Path, keep: float = 0.5) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * keep)])
    return target


SD15_SLIM_CHECKPOINT = "random_sd15_slim.safetensors"


def sd15_checkpoint(cache: Path, slim: bool = False) -> Path:
    """Full-size SD1.5 checkpoint with random weights (2 GiB, about 30 s to make once).

    `slim`: one the host still loads as SD1.5, its UNet 320 channels wide on every level (the full model
    widens to 1280): the same block layout and CLIP/VAE, for command-line runs many times over."""
    path = cache / (SD15_SLIM_CHECKPOINT if slim else SD15_CHECKPOINT)
    if not path.exists():
        with files.atomic_path(path) as tmp:
            command = [sys.executable, str(HERE / "make_sd15_checkpoint.py"), tmp] + (["--slim"] if slim else [])
            subprocess.run(command, check=True, env=dict(os.environ))
    return path


SD15_CONTROLNET = "random_controlnet_sd15.safetensors"


def sd15_controlnet(cache: Path) -> Path:
    """Full-size SD1.5 ControlNet with random weights (361 M parameters, made once)."""
    path = cache / SD15_CONTROLNET
    if not path.exists():
        with files.atomic_path(path) as tmp:
            subprocess.run([sys.executable, str(HERE / "make_sd15_controlnet.py"), tmp], check=True,
                           env=dict(os.environ), cwd=HERE)
    return path


SDXL_CHECKPOINT = "random_sdxl_bf16.safetensors"
SDXL_ATTN_LORA = "random_layer_xl_transparent_attn.safetensors"


def sdxl_checkpoint_and_lora(cache: Path) -> tuple[Path, Path]:
    """Full-size SDXL checkpoint with random bf16 weights (3.5 B parameters, 6.9 GB, about 1 min to make once,
    8 GB peak RAM) and a rank-256 `layer_xl_transparent_attn` LoRA in the published keys for its UNet."""
    checkpoint, lora = cache / SDXL_CHECKPOINT, cache / SDXL_ATTN_LORA
    if not (checkpoint.exists() and lora.exists()):
        with files.atomic_path(checkpoint) as checkpoint_tmp, files.atomic_path(lora) as lora_tmp:
            subprocess.run([sys.executable, str(HERE / "make_sdxl_checkpoint.py"), checkpoint_tmp, lora_tmp],
                           check=True, env=dict(os.environ), cwd=HERE)
    return checkpoint, lora


SDXL_VEGA_CHECKPOINT = "random_sdxl_segmind_vega_bf16.safetensors"


def sdxl_vega_checkpoint(cache: Path) -> Path:
    """An SDXL checkpoint with Segmind Vega's reduced UNet (745 M parameters; SDXL's 2.6 B) and SDXL's real-shape
    CLIP-L, CLIP-G and VAE, random bf16 weights: the host detects it as `Segmind_Vega`, an SDXL with SDXL
    latents, and it trains within a CI machine's memory where the full-size UNet does not."""
    path = cache / SDXL_VEGA_CHECKPOINT
    if not path.exists():
        with files.atomic_path(path) as tmp:
            subprocess.run([sys.executable, str(HERE / "make_sdxl_checkpoint.py"), tmp, "--layout", "vega"],
                           check=True, env=dict(os.environ), cwd=HERE)
    return path


SD15_PREDICTOR = "random_sd15_paper_edges.safetensors"
SDXL_PREDICTOR = "random_sdxl_paper_edges.safetensors"


def edge_predictor_file(cache: Path, base: str = "SD1.5", seed: int = 0) -> Path:
    """An edge predictor for the full-size model of `base` (paper layers; SD1.5: 9280 channels, SDXL: 8320)
    with random weights and running statistics, in the pack's format."""
    from comfyui_layer_sketch.sketch_guidance.features import LAYER_SETS
    from comfyui_layer_sketch.sketch_guidance.predictor import EdgePredictor, PredictorInfo, save_predictor

    path = cache / (SD15_PREDICTOR if base == "SD1.5" else SDXL_PREDICTOR)
    if not path.exists():
        torch.manual_seed(seed)
        channels = {"SD1.5": 9280, "SDXL": 8320}[base]
        predictor = EdgePredictor(PredictorInfo(base, "paper", LAYER_SETS["paper"], channels))
        with torch.no_grad():
            for layer in predictor.layers:
                if isinstance(layer, torch.nn.BatchNorm1d):
                    layer.running_var.uniform_(0.5, 2.0)
        save_predictor(predictor.eval(), str(path))
    return path
