"""Per-step sampling cost of the LayerDiffusion UNet patches, against the unpatched model in the same run.

- SDXL-shaped UNet with attention (LoRA) and conv (diff) injection: the deltas are merged into the
  weights once, so steps after the first should cost what unpatched steps cost; with a start/end
  range the patched layers are gated instead, which costs per step.
- Full-size SD1.5 UNet with attention sharing, 1 frame and 3 frames, against a plain batch of the same
  size.
Weights are random in the published formats (speed does not depend on values).

    .host/0.30.0/venv/bin/python -P bench/patches.py [--steps 4] [--size 256] [--repeats 2] [--smoke]

`--smoke`: the tiny test UNets instead, to check that the bench runs (tests/e2e/test_benches.py); its
figures then mean nothing.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import host_first  # ComfyUI in-process, before its modules and the pack

import comfy.sample
import folder_paths
import torch
from comfyui_layer_sketch.nodes import NODE_CLASS_MAPPINGS
from support import layer_files
from support.host_models import NARROW_SD15_UNET, SD15_FULL_UNET, TINY_SDXL_UNET, random_model

SDXL_SHAPED = {**TINY_SDXL_UNET, "model_channels": 128, "num_res_blocks": [2, 2, 2],
               "transformer_depth": [0, 0, 2, 2, 4, 4], "transformer_depth_output": [0, 0, 0, 2, 2, 2, 4, 4, 4]}


def build(kind: str, smoke: bool = False):
    """The benchmarked UNet of `kind`, or with `smoke` the smallest one of the same layout."""
    layouts = {"SDXL": TINY_SDXL_UNET, "SD15": NARROW_SD15_UNET} if smoke else {"SDXL": SDXL_SHAPED,
                                                                                 "SD15": SD15_FULL_UNET}
    return random_model(kind, layouts[kind])


def step_times(model, batch: int, steps: int, size: int) -> tuple[float, float]:
    """(first step, median of the later steps) in seconds."""
    sdxl = isinstance(model.model.model_config, __import__("comfy.supported_models").supported_models.SDXL)
    width = 2048 if sdxl else 768
    extra = {"pooled_output": torch.zeros(1, 1280)} if sdxl else {}
    positive, negative = [[torch.randn(1, 77, width), extra]], [[torch.zeros(1, 77, width), extra]]
    latent = torch.zeros(batch, 4, size // 8, size // 8)
    stamps = [time.perf_counter()]
    comfy.sample.sample(model, comfy.sample.prepare_noise(latent, 0), steps, 5.0, "euler", "normal", positive,
                        negative, latent, seed=0, disable_pbar=True,
                        callback=lambda *_: stamps.append(time.perf_counter()))
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    return gaps[0], statistics.median(gaps[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="tiny models, to check the bench runs")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:  # the layer files written here go with it
        folder = Path(scratch)
        folder_paths.add_model_folder_path("layer_model", str(folder), is_default=True)
        apply = NODE_CLASS_MAPPINGS["LayerDiffuseApply"]()
        joint = NODE_CLASS_MAPPINGS["LayerDiffuseJointApply"]()
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {options.size} px, {options.steps} steps")
        print(f"{'case':<34} {'batch':>5} {'first s':>8} {'step s':>8} {'plain step s':>12} {'ratio':>6}")

        sdxl = build("SDXL", options.smoke)
        layer_files.save(layer_files.sdxl_attention_lora(sdxl, rank=256),
                         folder / "layer_xl_transparent_attn.safetensors")
        layer_files.save(layer_files.sdxl_conv_diff(sdxl), folder / "layer_xl_transparent_conv.safetensors")
        cases = [("SDXL-shaped attention injection", sdxl, lambda m: apply.apply(m, "SDXL transparent (attention "
                                                                                   "injection)", 1.0)[0], 1),
                 ("SDXL-shaped conv injection", sdxl, lambda m: apply.apply(m, "SDXL transparent (conv injection)",
                                                                            1.0)[0], 1)]
        cases += [("SDXL-shaped attention, range 0-0.99", sdxl,
                   lambda m: apply.apply(m, "SDXL transparent (attention injection)", 1.0, 0.0, 0.99)[0], 1),
                  ("SDXL-shaped conv, range 0-0.99", sdxl,
                   lambda m: apply.apply(m, "SDXL transparent (conv injection)", 1.0, 0.0, 0.99)[0], 1)]
        sd15 = build("SD15", options.smoke)
        layer_files.save(layer_files.attention_sharing(sd15, 1, False),
                         folder / "layer_sd15_transparent_attn.safetensors")
        layer_files.save(layer_files.attention_sharing(sd15, 3, False), folder / "layer_sd15_joint.safetensors")
        cases += [("SD1.5 attention sharing, 1 frame", sd15, lambda m: apply.apply(m, "auto", 1.0)[0], 1),
                  ("SD1.5 attention sharing, 3 frames", sd15, lambda m: joint.apply(m, 1.0)[0], 3)]
        for name, base, patch, batch in cases:
            step_times(base, batch, 2, options.size)  # warm-up
            patched = patch(base)
            runs = []  # plain and patched alternate, so that drift in machine load hits both alike
            for _ in range(options.repeats):
                runs.append((step_times(base, batch, options.steps, options.size)[1],
                             *step_times(patched, batch, options.steps, options.size)))
            plain = min(r[0] for r in runs)
            first, step = runs[0][1], min(r[2] for r in runs)
            print(f"{name:<34} {batch:>5} {first:>8.2f} {step:>8.2f} {plain:>12.2f} {step / plain:>6.2f}", flush=True)


if __name__ == "__main__":
    main()
