"""`torchrun -m sketch_guidance.train` as a user runs it, on the CPU (gloo): the same predictor as one process
with the same global batch, with a random subset of each image's latent pixels and with all of them, resume
with another process count, and a killed process.

The checkpoint is the slim random SD1.5 (the host loads it as SD1.5; 320 channels on every UNet level), at
64 px, so that each run costs seconds. Measured (2 processes against 1, 4 steps of 4 images, Adam lr 1e-4),
subset / every pixel: predictions 1.3e-5 / 2.6e-6 of their spread apart, the first BatchNorm's running mean
7.6e-6 / 3.0e-6, weights 2.8e-5 / 1.2e-5 (Adam's first steps move a weight by up to lr whatever the size of
its gradient, so rounding in near-zero gradients shows). While one process used PyTorch's BatchNorm1d and two
the trainer's own, every pixel gave 1.8e-4 (predictions); per-process BatchNorm statistics, 1e-2 and more.
"""

from __future__ import annotations

import os
import re
import subprocess

import hostenv
import pytest
import torch
from comfyui_layer_sketch.common.training.distributed import KILL_FOR_TESTS
from comfyui_layer_sketch.sketch_guidance.predictor import load_predictor
from support import fixtures, sketches
from support import torchrun as launch

pytestmark = pytest.mark.e2e

STEPS, LEARNING_RATE = 4, 1e-4
# Latent pixels per image and step: a random subset of the 8x8 latent of a 64 px image, or (the default, at or
# above its 64 pixels) every pixel in raster order, which is another path through the trainer.
SUBSET, WHOLE = 16, 1024
PREDICTION_TOLERANCE = 5e-5  # of the predictions' spread; measured 1.3e-5 at most (see the docstring above)
RUNNING_MEAN_TOLERANCE = 5e-5  # measured 7.6e-6 at most
WEIGHT_TOLERANCE = 2 * LEARNING_RATE  # measured 2.8e-5 at most; see the docstring above
FIRST_NORM = "layers.2.running_mean"  # the first BatchNorm's running mean


def _train_arguments(fixture_cache, images, output, steps: int, pixels: int) -> list[str]:
    return ["-m", "sketch_guidance.train", "--comfyui", str(hostenv.COMFY_DIR),
            "--checkpoint", str(fixtures.sd15_checkpoint(fixture_cache, slim=True)), "--images", str(images),
            "--output", str(output), "--steps", str(steps), "--batch-size", "4", "--lr", str(LEARNING_RATE),
            "--resolution", "64", "--pixels-per-image", str(pixels), "--save-every", "1", "--cpu"]


def _one_process(fixture_cache, images, output, steps: int = STEPS,
                 pixels: int = SUBSET) -> subprocess.CompletedProcess:
    return launch.run(_train_arguments(fixture_cache, images, output, steps, pixels))


def _torchrun(fixture_cache, images, output, processes: int, steps: int = STEPS, rendezvous: bool = False,
              pixels: int = SUBSET, **env: str) -> subprocess.CompletedProcess:
    return launch.torchrun(_train_arguments(fixture_cache, images, output, steps, pixels), processes, rendezvous,
                           **env)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return sketches.write_image_folder(tmp_path_factory.mktemp("images"), 6)  # 6: epochs end mid-batch


@pytest.fixture(scope="module")
def single_runs(tmp_path_factory, fixture_cache, images):
    """The predictor one process trains in STEPS steps of the global batch, by pixels per image (made once each)."""
    runs = {}

    def single_run(pixels: int):
        if pixels not in runs:
            output = tmp_path_factory.mktemp("single") / "edges.safetensors"
            launch.succeeded(_one_process(fixture_cache, images, output, pixels=pixels))
            runs[pixels] = load_predictor(str(output))
        return runs[pixels]

    return single_run


@pytest.fixture(scope="module")
def single(single_runs):
    return single_runs(SUBSET)


def _assert_matches(single, path) -> None:
    other = load_predictor(str(path))
    assert other.info.trained_steps == STEPS
    mine, theirs = single.state_dict(), other.state_dict()
    weights = max(float((mine[key] - theirs[key]).abs().max()) for key in mine)
    running_mean = float((mine[FIRST_NORM] - theirs[FIRST_NORM]).abs().max())
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(2, single.info.feature_channels, 8, 8, generator=generator)
    noise = torch.randn(2, 4, 8, 8, generator=generator)
    with torch.no_grad():
        expected = single(features, noise)
        predictions = float((expected - other(features, noise)).abs().max() / expected.std())
    print(f"max |delta| against one process: weights {weights:.2e}, first BatchNorm's running mean "
          f"{running_mean:.2e}, predictions {predictions:.2e} of their spread")
    assert predictions < PREDICTION_TOLERANCE and running_mean < RUNNING_MEAN_TOLERANCE, (predictions, running_mean)
    assert weights < WEIGHT_TOLERANCE, weights


@pytest.mark.parametrize("pixels", [SUBSET, WHOLE], ids=["pixel-subset", "whole-latent"])
def test_two_processes_train_the_predictor_of_one_and_only_rank_0_writes(tmp_path, fixture_cache, images, single_runs,
                                                                         pixels):
    output = tmp_path / "edges.safetensors"
    result = launch.succeeded(_torchrun(fixture_cache, images, output, 2, pixels=pixels))
    assert result.stdout.count("SD1.5 checkpoint, 6 images") == 1, "rank 0 alone prints"
    assert "2 processes (gloo): each step's 4 images are shared out, 2 per process" in result.stdout
    assert result.stdout.count("final loss") == 1 and result.stderr.count(f"{STEPS}/{STEPS}") >= 1
    assert sorted(os.listdir(tmp_path)) == ["edges.safetensors", "edges.safetensors.train-state"], \
        "one predictor, one state, no temporary files"
    _assert_matches(single_runs(pixels), output)


def test_a_killed_process_fails_the_run_which_resumes_with_one_process(tmp_path, fixture_cache, images, single):
    output = tmp_path / "edges.safetensors"
    killed = _torchrun(fixture_cache, images, output, 2, rendezvous=True, **{KILL_FOR_TESTS: "1:2"})
    assert killed.returncode != 0
    assert re.search(r"rank\s*: 1 \(local_rank: 1\)\s*exitcode\s*: -9", killed.stderr), \
        "torchrun names the killed rank\n" + killed.stderr[-3000:]
    assert "Training process rank 0 of 2 stopped in step 3" in killed.stderr, killed.stderr[-3000:]
    assert f"The state saved after step 2 is kept in {output}.train-state" in killed.stderr
    assert "run the same command again, with any number of processes, to resume" in killed.stderr
    assert sorted(os.listdir(tmp_path)) == ["edges.safetensors.train-state"], "no predictor yet, no temporary files"
    assert torch.load(f"{output}.train-state", map_location="cpu", weights_only=True)["step"] == 2

    resumed = launch.succeeded(_torchrun(fixture_cache, images, output, 1))
    assert "resumed from step 2" in resumed.stdout
    _assert_matches(single, output)


def test_a_run_of_one_process_resumes_with_two(tmp_path, fixture_cache, images, single):
    output = tmp_path / "edges.safetensors"
    launch.succeeded(_one_process(fixture_cache, images, output, steps=2))
    resumed = launch.succeeded(_torchrun(fixture_cache, images, output, 2))
    assert "resumed from step 2" in resumed.stdout
    _assert_matches(single, output)
