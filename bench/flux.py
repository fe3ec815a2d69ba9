"""FLUX.1 benchmark: time per sampling step of the reduced FLUX.1-dev (real widths, 1 double + 1 single block)
plain, with the FLUX LayerDiffuse LoRA merged by the host, and with the LoRA gated to part of the steps;
measured alternately in one process, best of the repeats, with the peak memory of the process. 'switch s' is
what the first step costs beyond a step when the sampled model changes (the host merges or removes weights).

    .host/0.30.0/venv/bin/python -P bench/flux.py [--sizes 64 256] [--steps 4] [--repeats 3]

The model and LoRA are the test fixtures (random weights, in the published layouts), made on first use in
LAYER_SKETCH_TEST_CACHE. A full FLUX.1-dev has 19 + 38 blocks: scale the block time accordingly.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import host_first  # ComfyUI in-process, before its modules and the pack

import comfy.sample
import folder_paths
import torch
from comfyui_layer_sketch.layer_model import weights
from comfyui_layer_sketch.nodes import NODE_CLASS_MAPPINGS
from support import fixtures, flux_models

from bench.decode import PeakMemory


def sample(model, size: int, steps: int) -> torch.Tensor:
    latent = torch.zeros(1, 16, size // 8, size // 8)
    noise = comfy.sample.prepare_noise(latent, 0)
    cond = flux_models.flux_conditioning(1, tokens=64)
    return comfy.sample.sample(model, noise, steps, 1.0, "euler", "simple", cond, cond, latent, seed=0,
                               disable_pbar=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    options = parser.parse_args()

    cache = fixtures.cache_dir()
    with PeakMemory(torch.device("cpu")) as load_peak:
        flux = flux_models.load_reduced_flux(cache)
    with tempfile.TemporaryDirectory(prefix="flux_bench_") as scratch:  # the layer files written here go with it
        layer_folder = Path(scratch)
        fixtures._save(flux_models.peft_lora(scale=0.05), layer_folder / "layerlora.safetensors")
        folder_paths.add_model_folder_path(weights.FOLDER_NAME, str(layer_folder), is_default=True)
        os.environ[weights.OFFLINE_ENV] = "1"
        apply = NODE_CLASS_MAPPINGS["LayerDiffuseApply"]().apply
        models = {"plain": flux, "LoRA merged": apply(flux, "auto", 1.0)[0],
                  "LoRA gated 0-0.5": apply(flux, "auto", 1.0, 0.0, 0.5)[0]}
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; reduced FLUX.1-dev loaded with "
              f"{load_peak.mib:.0f} MiB; {options.steps} euler steps, 64 text tokens, best of {options.repeats}")
        print(f"{'size':>5} {'model':>17} {'s/step':>8} {'vs plain':>9} {'switch s':>9} {'peak MiB':>9}")
        for size in options.sizes:
            best = {name: [float("inf"), float("inf"), 0.0] for name in models}
            for _ in range(options.repeats):
                for name, model in models.items():  # alternating, so drift on a noisy machine hits all alike
                    with PeakMemory(torch.device("cpu")) as peak:
                        start = time.perf_counter()
                        sample(model, size, 1)  # the host swaps this clone's weights in: paid once per switch
                        switched = time.perf_counter()
                        sample(model, size, options.steps)
                        done = time.perf_counter()
                    step = (done - switched) / options.steps
                    record = best[name]
                    record[:] = [min(record[0], step), min(record[1], switched - start - step),
                                 max(record[2], peak.mib + load_peak.mib)]
            for name, (step, switch, mib) in best.items():
                print(f"{size:>5} {name:>17} {step:>8.3f} {step / best['plain'][0]:>9.2f} {max(switch, 0.0):>9.2f} "
                      f"{mib:>9.0f}", flush=True)


if __name__ == "__main__":
    main()
