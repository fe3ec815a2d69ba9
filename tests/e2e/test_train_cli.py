"""`python -m sketch_guidance.train` as a user runs it: a real checkpoint file, an image folder, resume."""

from __future__ import annotations

import subprocess

import hostenv
import pytest
from comfyui_layer_sketch.sketch_guidance.predictor import load_predictor
from support import fixtures, sketches

pytestmark = pytest.mark.e2e


def _train(fixture_cache, images, output, steps: int) -> subprocess.CompletedProcess:
    command = [str(hostenv.venv_python()), "-m", "sketch_guidance.train", "--comfyui", str(hostenv.COMFY_DIR),
               "--checkpoint", str(fixtures.sd15_checkpoint(fixture_cache)), "--images", str(images),
               "--output", str(output), "--steps", str(steps), "--batch-size", "2", "--resolution", "64",
               "--save-every", "1", "--cpu"]
    return subprocess.run(command, cwd=hostenv.REPO, capture_output=True, text=True, timeout=900,
                          env=hostenv.host_environment())


def test_command_line_training_writes_a_predictor_and_resumes(tmp_path, fixture_cache):
    images = sketches.write_image_folder(tmp_path / "images", 3)
    output = tmp_path / "cli_edges.safetensors"
    first = _train(fixture_cache, images, output, 2)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "SD1.5 checkpoint, 3 images, 9280 feature channels" in first.stdout
    assert "2/2" in first.stderr, "tqdm shows progress"
    assert load_predictor(str(output)).info.trained_steps == 2
    again = _train(fixture_cache, images, output, 3)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed from step 2" in again.stdout
    assert load_predictor(str(output)).info.trained_steps == 3


def test_command_line_refuses_an_empty_folder(tmp_path, fixture_cache):
    (tmp_path / "empty").mkdir()
    result = _train(fixture_cache, tmp_path / "empty", tmp_path / "x.safetensors", 2)
    assert result.returncode != 0 and "holds no images" in result.stderr
