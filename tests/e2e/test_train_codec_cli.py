"""`python -m layer_model.train_codec`, plain and under torchrun, as a user runs it on the CPU (gloo).

The VAE is the host's Wan 2.1 VAE of Qwen-Image (random, narrowed: the host reads its width from the file), the
decoder an eighth of the published width, 64 px images: each run costs seconds. 2 processes must train the
codec one process trains with the same global batch, a run resumes with another process count, a killed
process leaves the last saved state to resume from, and bad arguments are refused before training.
"""

from __future__ import annotations

import os

import pytest
import torch
from comfyui_layer_sketch.common.training.distributed import KILL_FOR_TESTS
from comfyui_layer_sketch.layer_model import trained_codec
from support import host_vaes
from support import torchrun as launch
from support.shapes import write_rgba_folder

pytestmark = pytest.mark.e2e

STEPS = 4
WEIGHT_TOLERANCE = 1e-4  # AdamW moves a weight by up to lr (1e-3) a step; rounding in near-zero gradients shows


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_rgba_folder(tmp_path_factory.mktemp("rgba"), 10, 64, seed=5, opaque=1)  # 1 held out, 9 train


@pytest.fixture(scope="module")
def vae_file(fixture_cache):
    return host_vaes.FILES["wan21"](fixture_cache)


def _arguments(vae_file, images, output, steps: int = STEPS, *extra: str) -> list[str]:
    import hostenv

    return ["-m", "layer_model.train_codec", "--comfyui", str(hostenv.COMFY_DIR), "--vae", str(vae_file),
            "--data", str(images), "--out", str(output), "--steps", str(steps), "--batch-size", "4",
            "--resolution", "64", "--lr", "1e-3", "--decoder-width", "0.125", "--save-every", "1", "--cpu", *extra]


@pytest.fixture(scope="module")
def single(tmp_path_factory, vae_file, images):
    output = tmp_path_factory.mktemp("single") / "codec.safetensors"
    result = launch.succeeded(launch.run(_arguments(vae_file, images, output)))
    assert "Qwen-Image (Wan 2.1 VAE): 16 channels at 1/8; 10 transparent images; skipped 1 fully opaque, " \
           "1 held out" in result.stdout
    assert "held out: alpha error" in result.stdout and "harmlessness" in result.stdout
    return output


def _decoder_difference(a, b) -> float:
    first, second = (trained_codec.load_part(str(path), "decoder") for path in (a, b))
    return max(float((first[key] - second[key]).abs().max()) for key in first)


def test_two_processes_train_the_codec_of_one_and_only_rank_0_writes(tmp_path, vae_file, images, single):
    output = tmp_path / "codec.safetensors"
    result = launch.succeeded(launch.torchrun(_arguments(vae_file, images, output), 2))
    assert result.stdout.count("Qwen-Image (Wan 2.1 VAE): 16 channels") == 1, "rank 0 alone prints"
    assert "2 processes (gloo): each step's 4 images are shared out, 2 per process" in result.stdout
    assert sorted(os.listdir(tmp_path)) == ["codec.safetensors", "codec.safetensors.train-state"]
    difference = _decoder_difference(single, output)
    print(f"\nlargest decoder weight difference, 2 processes against 1: {difference:.2e}")
    assert difference < WEIGHT_TOLERANCE
    info = trained_codec.read_info(str(output))
    assert (info.latent_format, info.channels, info.downscale, info.steps) == ("Wan21", 16, 8, STEPS)


def test_a_killed_process_fails_the_run_which_resumes_with_one_process(tmp_path, vae_file, images, single):
    output = tmp_path / "codec.safetensors"
    killed = launch.torchrun(_arguments(vae_file, images, output), 2, rendezvous=True, **{KILL_FOR_TESTS: "1:2"})
    assert killed.returncode != 0
    assert "Training process rank 0 of 2 stopped in step 3" in killed.stderr, killed.stderr[-3000:]
    assert f"The state saved after step 2 is kept in {output}.train-state" in killed.stderr
    assert sorted(os.listdir(tmp_path)) == ["codec.safetensors.train-state"], "no codec yet, no temporary files"
    assert torch.load(f"{output}.train-state", map_location="cpu", weights_only=True)["step"] == 2
    resumed = launch.succeeded(launch.run(_arguments(vae_file, images, output, STEPS, "--resume")))
    assert "resumed from step 2" in resumed.stdout
    assert _decoder_difference(single, output) < WEIGHT_TOLERANCE


def test_a_run_of_one_process_resumes_with_two(tmp_path, vae_file, images, single):
    output = tmp_path / "codec.safetensors"
    launch.succeeded(launch.run(_arguments(vae_file, images, output, 2)))
    resumed = launch.succeeded(launch.torchrun(_arguments(vae_file, images, output), 2))
    assert "resumed from step 2" in resumed.stdout
    assert _decoder_difference(single, output) < WEIGHT_TOLERANCE


def test_bad_arguments_are_refused_before_training(tmp_path, vae_file, images, single):
    (tmp_path / "empty").mkdir()
    cases = [
        (_arguments(vae_file, tmp_path / "empty", tmp_path / "a.safetensors"), "holds no usable transparent image"),
        (_arguments(vae_file, images, tmp_path / "b.safetensors", 2, "--resume"), "Nothing to resume"),
        (_arguments(vae_file, images, single, STEPS, "--discriminator-weight", "0.5"),
         "holds the saved state of another run (config.discriminator_weight: saved 0.01, now 0.5)"),
        (_arguments(vae_file, images, tmp_path / "c.safetensors", 2, "--latent-format", "SD3"),
         "latent_format is SD3"),
        (_arguments(vae_file, images, tmp_path / "c.safetensors", 2, "--init", "published"),
         "No published transparency codec exists for Qwen-Image (Wan 2.1 VAE) latents"),
    ]
    for arguments, message in cases:
        result = launch.run(arguments)
        assert result.returncode != 0 and message in result.stderr, (message, result.stderr[-2000:])
        assert "Traceback" not in result.stderr, result.stderr[-2000:]
