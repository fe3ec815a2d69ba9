"""In-process host fixtures: a private `layer_model` folder registered through the host's folder API."""

from __future__ import annotations

import shutil
from pathlib import Path

import folder_paths
import pytest
from comfyui_layer_sketch.layer_model import weights
from support import fixtures


@pytest.fixture
def layer_folder(tmp_path, monkeypatch) -> Path:
    """An empty layer_model folder first in the host's search list; downloads go nowhere."""
    folder = tmp_path / "layer_model"
    folder.mkdir()
    paths, extensions = folder_paths.folder_names_and_paths[weights.FOLDER_NAME]
    saved = list(paths)
    folder_paths.add_model_folder_path(weights.FOLDER_NAME, str(folder), is_default=True)
    monkeypatch.setenv(weights.OFFLINE_ENV, "1")
    yield folder
    folder_paths.folder_names_and_paths[weights.FOLDER_NAME] = (saved, extensions)


@pytest.fixture
def sd15_codecs(layer_folder, fixture_cache) -> Path:
    """Random SD1.5 decoder and encoder in the published format, under their published names."""
    shutil.copy(fixtures.decoder_file(fixture_cache), layer_folder / "layer_sd15_vae_transparent_decoder.safetensors")
    shutil.copy(fixtures.encoder_file(fixture_cache), layer_folder / "layer_sd15_vae_transparent_encoder.safetensors")
    return layer_folder


@pytest.fixture
def predictor_folder(tmp_path) -> Path:
    """An empty edge_predictor folder first in the host's search list (where trained predictors are saved)."""
    from comfyui_layer_sketch.sketch_guidance import host as sketch_host

    folder = tmp_path / "edge_predictor"
    folder.mkdir()
    paths, extensions = folder_paths.folder_names_and_paths[sketch_host.FOLDER_NAME]
    saved = list(paths)
    folder_paths.add_model_folder_path(sketch_host.FOLDER_NAME, str(folder), is_default=True)
    yield folder
    folder_paths.folder_names_and_paths[sketch_host.FOLDER_NAME] = (saved, extensions)
