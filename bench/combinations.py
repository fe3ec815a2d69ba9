"""Per-step cost of LayerDiffusion and sketch guidance next to other packs' patches, against each part alone.

On the full-size SD1.5 UNet (random weights, speed does not depend on values), each row is one graph's
MODEL; all rows of a repeat run one after another, so drift in machine load hits them alike, and the
fastest repeat counts. Ratios compare a combination with the slower of its two parts.

    .host/0.30.0/venv/bin/python -P bench/combinations.py [--steps 3] [--size 256] [--repeats 2] [--smoke]

`--smoke`: the narrow SD1.5-layout test UNet instead, to check that the bench runs (tests/e2e/test_benches.py);
its figures then mean nothing.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import host_first  # ComfyUI in-process, before its modules and the pack

import folder_paths
import torch
from comfy_extras.nodes_hypertile import HyperTile
from comfy_extras.nodes_pag import PerturbedAttentionGuidance
from comfyui_layer_sketch.nodes import NODE_CLASS_MAPPINGS
from comfyui_layer_sketch.sketch_guidance import host as sketch_host
from comfyui_layer_sketch.sketch_guidance.features import LAYER_SETS, feature_channels
from comfyui_layer_sketch.sketch_guidance.predictor import EdgePredictor, PredictorInfo
from support import layer_files
from support.host_models import patcher_of

from bench.patches import build, step_times


def graphs(base, size: int) -> dict:
    """name -> MODEL, for each part alone and each combination."""
    layered = NODE_CLASS_MAPPINGS["LayerDiffuseApply"]().apply(base, "auto", 1.0)[0]
    unet = base.model.diffusion_model
    info = PredictorInfo("SD15", "paper", LAYER_SETS["paper"], feature_channels(unet, LAYER_SETS["paper"]))
    predictor = patcher_of(EdgePredictor(info).eval())
    target = torch.randn(1, 4, size // 8, size // 8, generator=torch.Generator().manual_seed(0))

    def sketched(model):
        return sketch_host.apply_guidance(model, predictor, target, 1.6, 1.0)

    def pag(model):
        return PerturbedAttentionGuidance.execute(model, 3.0)[0]

    def hypertile(model):
        return HyperTile.execute(model, 128, 2, 0, False)[0]

    return {"plain": base, "layers": layered, "sketch": sketched(base), "PAG": pag(base),
            "HyperTile": hypertile(base), "layers + PAG": pag(layered), "layers + HyperTile": hypertile(layered),
            "sketch + PAG": pag(sketched(base)), "sketch + layers": sketched(layered)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="tiny models, to check the bench runs")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:  # the layer files written here go with it
        folder = Path(scratch)
        folder_paths.add_model_folder_path("layer_model", str(folder), is_default=True)
        base = build("SD15", options.smoke)
        layer_files.save(layer_files.attention_sharing(base, 1, False),
                         folder / "layer_sd15_transparent_attn.safetensors")
        models = graphs(base, options.size)
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {options.size} px, {options.steps} steps")
        with torch.inference_mode():  # as the host runs a prompt
            step_times(base, 1, 2, options.size)  # warm-up
            times: dict[str, float] = {}
            for _ in range(options.repeats):
                for name, model in models.items():
                    step = step_times(model, 1, options.steps, options.size)[1]
                    times[name] = min(times.get(name, step), step)
        print(f"{'graph':<22} {'step s':>8} {'vs plain':>9} {'vs slower part':>15}")
        for name, step in times.items():
            parts = name.split(" + ")
            slower = max(times[p] for p in parts) if len(parts) > 1 else None
            combined = f"{step / slower:>15.2f}" if slower else f"{'':>15}"
            print(f"{name:<22} {step:>8.2f} {step / times['plain']:>9.2f} {combined}")


if __name__ == "__main__":
    main()
