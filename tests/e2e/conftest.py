"""A real ComfyUI server with the pack, in a throw-away base directory, for tests over HTTP.

Models reach it the way users' models do: the checkpoint through the base directory's
`models/checkpoints`, the LayerDiffusion files through an extra_model_paths.yaml `layer_model` entry.
Downloads point at a closed port on 127.0.0.1, so a missing file fails as it would offline.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from host_server import ComfyServer
from support import fixtures, layer_files
from support.fixtures import SD15_CHECKPOINT as CHECKPOINT
from support.servers import new_base_dir, start_server


@dataclass
class LiveServer:
    url: str
    base: Path
    layer_folder: Path  # the yaml-registered layer_model folder
    server: ComfyServer

    @property
    def output_dir(self) -> Path:
        return self.base / "output"


@pytest.fixture(scope="session")
def live_server(tmp_path_factory, fixture_cache) -> LiveServer:
    base = new_base_dir(tmp_path_factory, {
        "checkpoints": {CHECKPOINT: fixtures.sd15_checkpoint(fixture_cache)},
        "controlnet": {fixtures.SD15_CONTROLNET: fixtures.sd15_controlnet(fixture_cache)},
        "edge_predictor": {fixtures.SD15_PREDICTOR: fixtures.edge_predictor_file(fixture_cache, "SD15"),
                           fixtures.SDXL_PREDICTOR: fixtures.edge_predictor_file(fixture_cache, "SDXL")},
    })
    layer_folder = tmp_path_factory.mktemp("shared_models") / "layer_model"
    layer_folder.mkdir()
    shutil.copy(fixtures.decoder_file(fixture_cache), layer_folder / "layer_sd15_vae_transparent_decoder.safetensors")
    shutil.copy(fixtures.encoder_file(fixture_cache), layer_folder / "layer_sd15_vae_transparent_encoder.safetensors")
    for name in ("transparent_attn", "joint", "fg2bg", "bg2fg"):
        (layer_folder / f"layer_sd15_{name}.safetensors").symlink_to(
            layer_files.published_sharing_file(fixture_cache, name))
    server = start_server(base, layer_folder)
    yield LiveServer(server.url, base, layer_folder, server)
    server.stop()
