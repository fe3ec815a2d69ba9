"""`torchrun -m sketch_guidance.train` as a user runs it, on the CPU (gloo): the same predictor as one process
with the same global batch, resume with another process count, and a killed process.

The checkpoint is the slim random SD1.5 (the host loads it as SD1.5; 320 channels on every UNet level), at
64 px, so that each run costs seconds. Measured (2 processes against 1, 4 steps of 4 images, Adam lr 1e-4):
the predictions differ by up to 8.5e-7 and the weights by up to 4.8e-5 (Adam's first steps move a weight by up
to lr whatever the size of its gradient, so rounding in near-zero gradients shows); with per-process
BatchNorm statistics the predictions differed by 1e-2.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess

import hostenv
import pytest
import torch
from comfyui_layer_sketch.sketch_guidance.distributed import KILL_FOR_TESTS
from comfyui_layer_sketch.sketch_guidance.predictor import load_predictor
from support import fixtures, sketches

pytestmark = pytest.mark.e2e

STEPS, LEARNING_RATE = 4, 1e-4
PREDICTION_TOLERANCE = 1e-5  # measured 8.5e-7; with per-process BatchNorm statistics: 1e-2
WEIGHT_TOLERANCE = 2 * LEARNING_RATE  # measured 4.8e-5; see the docstring above


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def _train_arguments(fixture_cache, images, output, steps: int) -> list[str]:
    return ["-m", "sketch_guidance.train", "--comfyui", str(hostenv.COMFY_DIR),
            "--checkpoint", str(fixtures.sd15_checkpoint(fixture_cache, slim=True)), "--images", str(images),
            "--output", str(output), "--steps", str(steps), "--batch-size", "4", "--lr", str(LEARNING_RATE),
            "--resolution", "64", "--pixels-per-image", "16", "--save-every", "1", "--cpu"]


def _run(command: list[str], **env: str) -> subprocess.CompletedProcess:
    # One thread per process: the 2-process runs share the CI machine's 2 cores, and a single process with 2
    # threads is slow on a busy machine.
    environment = {**hostenv.host_environment(), "OMP_NUM_THREADS": "1", **env}
    return subprocess.run(command, cwd=hostenv.REPO, capture_output=True, text=True, timeout=600, env=environment)


def _one_process(fixture_cache, images, output, steps: int = STEPS) -> subprocess.CompletedProcess:
    return _run([str(hostenv.venv_python()), *_train_arguments(fixture_cache, images, output, steps)])


def _torchrun(fixture_cache, images, output, processes: int, steps: int = STEPS, rendezvous: bool = False,
              **env: str) -> subprocess.CompletedProcess:
    """torchrun on one machine; `rendezvous`: in the several-machine form (--nnodes, c10d rendezvous endpoint)."""
    if rendezvous:
        launch = ["--nnodes", "1", "--rdzv_backend", "c10d", "--rdzv_endpoint", f"localhost:{_free_port()}"]
    else:
        launch = ["--master_port", str(_free_port())]
    command = [str(hostenv.venv_python()), "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
               *launch, *_train_arguments(fixture_cache, images, output, steps)]
    return _run(command, **env)


def _succeeded(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return sketches.write_image_folder(tmp_path_factory.mktemp("images"), 6)  # 6: epochs end mid-batch


@pytest.fixture(scope="module")
def single(tmp_path_factory, fixture_cache, images):
    """The predictor one process trains in STEPS steps of the global batch."""
    output = tmp_path_factory.mktemp("single") / "edges.safetensors"
    _succeeded(_one_process(fixture_cache, images, output))
    return load_predictor(str(output))


def _assert_matches(single, path) -> None:
    other = load_predictor(str(path))
    assert other.info.trained_steps == STEPS
    weights = max(float((a - b).abs().max()) for a, b in zip(single.state_dict().values(),
                                                             other.state_dict().values(), strict=True))
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(2, single.info.feature_channels, 8, 8, generator=generator)
    noise = torch.randn(2, 4, 8, 8, generator=generator)
    with torch.no_grad():
        predictions = float((single(features, noise) - other(features, noise)).abs().max())
    print(f"max |delta| against one process: weights {weights:.2e}, predictions {predictions:.2e}")
    assert predictions < PREDICTION_TOLERANCE and weights < WEIGHT_TOLERANCE, (weights, predictions)


def test_two_processes_train_the_predictor_of_one_and_only_rank_0_writes(tmp_path, fixture_cache, images, single):
    output = tmp_path / "edges.safetensors"
    result = _succeeded(_torchrun(fixture_cache, images, output, 2))
    assert result.stdout.count("SD15 checkpoint, 6 images") == 1, "rank 0 alone prints"
    assert "2 processes (gloo): each step's 4 images are shared out, 2 per process" in result.stdout
    assert result.stdout.count("final loss") == 1 and result.stderr.count(f"{STEPS}/{STEPS}") >= 1
    assert sorted(os.listdir(tmp_path)) == ["edges.safetensors", "edges.safetensors.train-state"], \
        "one predictor, one state, no temporary files"
    _assert_matches(single, output)


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

    resumed = _succeeded(_torchrun(fixture_cache, images, output, 1))
    assert "resumed from step 2" in resumed.stdout
    _assert_matches(single, output)


def test_a_run_of_one_process_resumes_with_two(tmp_path, fixture_cache, images, single):
    output = tmp_path / "edges.safetensors"
    _succeeded(_one_process(fixture_cache, images, output, steps=2))
    resumed = _succeeded(_torchrun(fixture_cache, images, output, 2))
    assert "resumed from step 2" in resumed.stdout
    _assert_matches(single, output)
