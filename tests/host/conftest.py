"""In-process host fixtures: a private `layer_model` folder registered through the host's folder API."""

from __future__ import annotations

import shutil
from pathlib import Path

import folder_paths
import pytest
import torch
from comfyui_layer_sketch.layer_model import weights
from comfyui_layer_sketch.sketch_guidance import host as sketch_host
from comfyui_layer_sketch.sketch_guidance.dataset import ImageFolder
from comfyui_layer_sketch.sketch_guidance.train import TrainConfig, train_predictor
from support import fixtures, sketches
from support.host_models import NARROW_SD15_UNET, random_model, small_vae

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test here runs the host in-process: all of them are marked `host` (run on every tested host)."""
    for item in items:
        if HERE in Path(item.path).parents:
            item.add_marker(pytest.mark.host)


@pytest.fixture
def layer_folder(tmp_path, monkeypatch) -> Path:
    """An empty layer_model folder first in the host's search list; downloads go nowhere."""
    monkeypatch.setenv(weights.OFFLINE_ENV, "1")
    yield from _first_model_folder(tmp_path, weights.FOLDER_NAME)


@pytest.fixture
def sd15_codecs(layer_folder, fixture_cache) -> Path:
    """Random SD1.5 decoder and encoder in the published format, under their published names."""
    shutil.copy(fixtures.decoder_file(fixture_cache), layer_folder / "layer_sd15_vae_transparent_decoder.safetensors")
    shutil.copy(fixtures.encoder_file(fixture_cache), layer_folder / "layer_sd15_vae_transparent_encoder.safetensors")
    return layer_folder


@pytest.fixture
def predictor_folder(tmp_path) -> Path:
    """An empty edge_predictor folder first in the host's search list (where trained predictors are saved)."""
    yield from _first_model_folder(tmp_path, sketch_host.FOLDER_NAME)


# --- Sketch guidance: the narrow SD1.5 UNet, a CLIP, and a predictor trained for it (shared by the test files) ---

@pytest.fixture(scope="session")
def narrow():
    with torch.inference_mode():
        return random_model("SD15", NARROW_SD15_UNET), small_vae()


@pytest.fixture(scope="session")
def clip(fixture_cache):
    return sketches.checkpoint_clip(fixture_cache)


@pytest.fixture(scope="session")
def trained(tmp_path_factory, narrow, clip):
    """A predictor trained on 24 synthetic images (shapes with known edges) for the narrow SD1.5 UNet."""
    model, vae = narrow
    folder = sketches.write_image_folder(tmp_path_factory.mktemp("shapes"), 24)
    output = str(tmp_path_factory.mktemp("predictor") / "shapes.safetensors")
    with torch.inference_mode(False):
        source = sketch_host.HostFeatureSource(model, vae, clip, "paper")
        # The sampler checks (test_samplers.py) pass with training seeds 0, 1 and 2 alike: they compare 64
        # sampling seeds at once, where 4 seeds made the outcome depend on which predictor training drew.
        config = TrainConfig(steps=sketches.TRAIN_STEPS, batch_size=4, learning_rate=1e-3, pixels_per_image=0,
                             save_every=50, seed=1)
        report = train_predictor(source, ImageFolder(str(folder), 64), config, output)
    return output, report


def _first_model_folder(tmp_path: Path, name: str):
    """An empty `name` model folder first in the host's search list while the test runs.

    The host's file-list cache is dropped on both sides: it keeps the folders it listed and reads their times on
    the next call, and a passing test's tmp_path is deleted (tmp_path_retention_policy), which would fail that read.
    """
    folder = tmp_path / name
    folder.mkdir()
    paths, extensions = folder_paths.folder_names_and_paths[name]
    saved = list(paths)
    folder_paths.add_model_folder_path(name, str(folder), is_default=True)
    folder_paths.filename_list_cache.pop(name, None)
    yield folder
    folder_paths.folder_names_and_paths[name] = (saved, extensions)
    folder_paths.filename_list_cache.pop(name, None)


@pytest.fixture
def lora_folder(tmp_path) -> Path:
    """An empty `loras` folder first in the host's search list, for LoraLoader."""
    yield from _first_model_folder(tmp_path, "loras")


@pytest.fixture
def vae_folder(tmp_path) -> Path:
    """An empty `vae` folder first in the host's search list."""
    yield from _first_model_folder(tmp_path, "vae")


@pytest.fixture
def output_dir(tmp_path) -> Path:
    """The host's output folder moved to the test's own while the test runs."""
    saved = folder_paths.get_output_directory()
    folder_paths.set_output_directory(str(tmp_path))
    yield tmp_path
    folder_paths.set_output_directory(saved)
