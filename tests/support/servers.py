"""ComfyUI servers for tests over HTTP: throw-away base directories, the pack linked in, downloads offline."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import hostenv
import torch
from comfyui_layer_sketch import queue_workflow as client
from host_server import ComfyServer, free_port

from . import fixtures, flux_models, layer_files, rgba_vaes

_RUNNING: list[ComfyServer] = []


def new_base_dir(make_dir: Callable[[str], Path], models: dict[str, dict[str, Path]]) -> Path:
    """A ComfyUI base directory with the pack in custom_nodes and {folder: {file name: fixture}} linked in.

    `make_dir(name)` makes a fresh empty folder (pytest's `tmp_path_factory.mktemp`, or a script's own)."""
    base = make_dir("comfy_base")
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / hostenv.PACK_LINK_NAME).symlink_to(hostenv.REPO, target_is_directory=True)
    for folder, files in models.items():
        (base / "models" / folder).mkdir(parents=True)
        for name, target in files.items():
            (base / "models" / folder / name).symlink_to(target)
    return base


def sd15_setup(make_dir: Callable[[str], Path], cache: Path) -> tuple[Path, Path]:
    """(base dir, layer_model folder) with the random full-size SD1.5 checkpoint, ControlNet, edge predictors
    in the base's models, and published-shape LayerDiffusion SD1.5 files in a separate yaml-registered folder."""
    base = new_base_dir(make_dir, {
        "checkpoints": {fixtures.SD15_CHECKPOINT: fixtures.sd15_checkpoint(cache)},
        "controlnet": {fixtures.SD15_CONTROLNET: fixtures.sd15_controlnet(cache)},
        "edge_predictor": {fixtures.SD15_PREDICTOR: fixtures.edge_predictor_file(cache, "SD1.5"),
                           fixtures.SDXL_PREDICTOR: fixtures.edge_predictor_file(cache, "SDXL")},
    })
    layer_folder = make_dir("shared_models") / "layer_model"
    layer_folder.mkdir()
    shutil.copy(fixtures.decoder_file(cache), layer_folder / "layer_sd15_vae_transparent_decoder.safetensors")
    shutil.copy(fixtures.encoder_file(cache), layer_folder / "layer_sd15_vae_transparent_encoder.safetensors")
    for name in ("transparent_attn", "joint", "fg2bg", "bg2fg"):
        (layer_folder / f"layer_sd15_{name}.safetensors").symlink_to(layer_files.published_sharing_file(cache, name))
    return base, layer_folder


FLUX_TEST_NODES = Path(__file__).resolve().parent / "flux_test_nodes"


def flux_setup(make_dir: Callable[[str], Path], cache: Path) -> tuple[Path, Path]:
    """(base dir, layer_model folder) with the reduced FLUX.1-dev and a random `ae` under the names the shipped
    FLUX graphs use, the FLUX LoRA, TransparentVAE.pth and AlphaVAE's RGBA VAE (diffusers layout) and LoRA in the
    layer_model folder, and the test-only conditioning node in custom_nodes."""
    base = new_base_dir(make_dir, {
        "diffusion_models": {"flux1-dev.safetensors": flux_models.reduced_flux_file(cache)},
        "vae": {"ae.safetensors": flux_models.flux_vae_file(cache)},
    })
    (base / "custom_nodes" / FLUX_TEST_NODES.name).symlink_to(FLUX_TEST_NODES, target_is_directory=True)
    layer_folder = make_dir("flux_models") / "layer_model"
    layer_folder.mkdir()
    lora = cache / "random_flux_layerlora_d1s1.safetensors"
    if not lora.exists():
        fixtures._save(flux_models.peft_lora(scale=0.05), lora)
    (layer_folder / "layerlora.safetensors").symlink_to(lora)
    (layer_folder / "TransparentVAE.pth").symlink_to(flux_models.transparent_vae_pth(cache))
    (layer_folder / "alphavae_flux1_rgba_vae.safetensors").symlink_to(rgba_vaes.rgba_vae_file(cache, "alphavae",
                                                                                              "diffusers"))
    (layer_folder / "alphavae_flux1_lora.safetensors").symlink_to(flux_models.alphavae_lora_file(cache))
    return base, layer_folder


def start_server(base: Path, layer_folder: Path, extra_args: tuple[str, ...] = ()) -> ComfyServer:
    """A server on `base` with `layer_folder` registered through an extra_model_paths.yaml, downloads offline.

    Servers of this session that are still running are asked to free their models first: only one
    full-size model set fits in a CI machine's memory at a time.
    """
    for running in _RUNNING:
        if running.alive():
            client.post_json(running.url, "/free", {"unload_models": True, "free_memory": True})
    yaml = base / "extra_model_paths.yaml"
    yaml.write_text(f"shared:\n  base_path: {layer_folder.parent}\n  layer_model: {layer_folder.name}\n")
    env = hostenv.host_environment()
    env["LAYER_SKETCH_WEIGHTS_URL"] = f"http://127.0.0.1:{free_port()}/offline"
    server = ComfyServer(hostenv.venv_python(), hostenv.COMFY_DIR, env=env, log_path=base / "server.log",
                         cpu=not torch.cuda.is_available(),
                         extra_args=["--base-directory", str(base), "--extra-model-paths-config", str(yaml),
                                     *extra_args])
    server.start()
    _RUNNING.append(server)
    return server


def pause_others() -> list[ComfyServer]:
    """Stop this session's running servers, for a test whose model needs the machine's memory to itself (a
    server's freed models can stay resident on a CPU); `resume` starts them again on the same ports."""
    paused = [server for server in _RUNNING if server.alive()]
    for server in paused:
        server.stop()
    return paused


def resume(paused: list[ComfyServer]) -> None:
    for server in paused:
        server.start()

