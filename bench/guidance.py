"""Cost of sketch guidance, against plain sampling in the same run, and the edge predictor's training speed.

- Step time: guided steps (gradient through the UNet) and unguided steps of a guided model, relative to
  plain sampling, alternating runs; for the narrow SD1.5-layout UNet and the full-size SD1.5 UNet.
- Peak memory during sampling with and without guidance (CUDA: peak allocated; CPU: peak resident
  memory above what the process held before the run, sampled every 5 ms).
- Training throughput (images per second) of `train_predictor` with the host feature source.
Weights are random (speed and memory do not depend on values); the full-size model is the cached
random SD1.5 checkpoint of the tests, loaded as the host loads checkpoints.

    .host/0.30.0/venv/bin/python -P bench/guidance.py [--size 256] [--steps 6] [--repeats 2] [--train-steps 3]
                                                      [--smoke]

`--smoke`: the narrow UNet alone, training batch 4, to check that the bench runs (tests/e2e/test_benches.py).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import host_first  # ComfyUI in-process, before its modules and the pack

import comfy.model_management as mm
import comfy.sample
import comfy.sd
import torch
from comfyui_layer_sketch.sketch_guidance import host as sketch_host
from comfyui_layer_sketch.sketch_guidance.dataset import ImageFolder
from comfyui_layer_sketch.sketch_guidance.features import LAYER_SETS, feature_channels
from comfyui_layer_sketch.sketch_guidance.predictor import EdgePredictor, PredictorInfo
from comfyui_layer_sketch.sketch_guidance.train import TrainConfig, train_predictor
from support import fixtures, sketches
from support.host_models import NARROW_SD15_UNET, random_model, small_vae

from bench._measure import PeakMemory

CACHE = fixtures.cache_dir()


def step_times(model, positive, negative, size: int, steps: int) -> list[float]:
    latent = torch.zeros(1, 4, size // 8, size // 8)
    stamps = [time.perf_counter()]
    comfy.sample.sample(model, comfy.sample.prepare_noise(latent, 0), steps, 5.0, "euler", "normal", positive,
                        negative, latent, seed=0, disable_pbar=True,
                        callback=lambda *_: stamps.append(time.perf_counter()))
    return [b - a for a, b in zip(stamps, stamps[1:], strict=False)]


def sampling_report(name: str, model, vae, clip, size: int, steps: int, repeats: int) -> None:
    unet = model.model.diffusion_model
    info = PredictorInfo("SD15", "paper", LAYER_SETS["paper"], feature_channels(unet, LAYER_SETS["paper"]))
    predictor = sketch_host.ModelPatcher(EdgePredictor(info).eval(), load_device=mm.get_torch_device(),
                                         offload_device=mm.unet_offload_device())
    with torch.inference_mode():
        positive = clip.encode_from_tokens_scheduled(clip.tokenize("a house"))
        negative = clip.encode_from_tokens_scheduled(clip.tokenize(""))
        sketch = torch.nn.functional.interpolate(sketches.drawn_sketch(1, 64).movedim(-1, 1), size=(size, size))
        target = sketch_host.sketch_target(vae, model, sketch.movedim(1, -1).clamp(0, 1))
        half = sketch_host.apply_guidance(model, predictor, target, 1.6, 0.5)
        step_times(model, positive, negative, size, 2)  # warm up and load
        step_times(half, positive, negative, size, 2)
        plain, guided, unguided, memory = [], [], [], {}
        for _ in range(repeats):
            with PeakMemory() as peak:
                plain += step_times(model, positive, negative, size, steps)[1:]
            memory["plain"] = max(memory.get("plain", 0.0), peak.mib)
            with PeakMemory() as peak:
                times = step_times(half, positive, negative, size, steps)
            memory["guided"] = max(memory.get("guided", 0.0), peak.mib)
            guided += times[: steps // 2]
            unguided += times[steps // 2 + 1:]
    base = statistics.median(plain)
    print(f"{name} at {size} px: plain step {base:.3f} s; guided step {statistics.median(guided):.3f} s "
          f"({statistics.median(guided) / base:.2f}x); unguided step of the guided model "
          f"{statistics.median(unguided):.3f} s ({statistics.median(unguided) / base:.2f}x)")
    print(f"{name} at {size} px: peak memory during sampling +{memory['plain']:.0f} MiB plain, "
          f"+{memory['guided']:.0f} MiB guided")


def training_report(name: str, model, vae, clip, resolution: int, steps: int, batch: int) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        folder = sketches.write_image_folder(Path(scratch) / "images", max(batch, 8), size=resolution)
        dataset = ImageFolder(str(folder), resolution)
        with torch.inference_mode(False):
            source = sketch_host.HostFeatureSource(model, vae, clip, "paper")
            config = TrainConfig(steps=1, batch_size=batch, pixels_per_image=1024)
            train_predictor(source, dataset, config, str(Path(scratch) / "warm.safetensors"))  # encodes, loads
            started = time.perf_counter()
            train_predictor(source, dataset, TrainConfig(steps=steps, batch_size=batch, pixels_per_image=1024),
                            str(Path(scratch) / "p.safetensors"))
            elapsed = time.perf_counter() - started
    print(f"{name} training at {resolution} px, batch {batch}: {steps * batch / elapsed:.2f} images/s "
          f"({elapsed / steps:.2f} s per step)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256, help="full-size UNet image size")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--train-steps", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="tiny models, to check the bench runs")
    args = parser.parse_args()
    print(f"device: {mm.get_torch_device()}, torch {torch.__version__}, {torch.get_num_threads()} threads")

    clip = sketches.checkpoint_clip(CACHE)
    with torch.inference_mode():
        narrow, narrow_vae = random_model("SD15", NARROW_SD15_UNET), small_vae()
    sampling_report("narrow SD1.5-layout UNet", narrow, narrow_vae, clip, 64, args.steps, args.repeats)
    training_report("narrow SD1.5-layout UNet", narrow, narrow_vae, clip, 64, args.train_steps, 4 if args.smoke else 16)
    if args.smoke:
        return

    with torch.inference_mode():
        full, _, full_vae, _ = comfy.sd.load_checkpoint_guess_config(str(fixtures.sd15_checkpoint(CACHE)),
                                                                     output_vae=True, output_clip=False)
    sampling_report("full-size SD1.5 UNet", full, full_vae, clip, args.size, args.steps, args.repeats)
    training_report("full-size SD1.5 UNet", full, full_vae, clip, args.size, args.train_steps, 4)


if __name__ == "__main__":
    main()
