"""The shipped flux2_klein_extract_foreground graph over HTTP on a reduced FLUX.2 Klein Base 4B the host detects as
FLUX.2 (Klein 4B's widths, one block of each kind), with flux2-klein-alpha's RGBA VAE (diffusers layout) and an
Extract LoRA in its published key format, random values; bad inputs answered clearly, server kept serving.

The text encoder (Qwen3-4B) is swapped for the test-only conditioning node of its shapes; the graph shrinks to
64 px and two steps. The host reads Klein's files from 0.30.0 on (0.3.75 takes every FLUX.2 file for FLUX.2-dev).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from comfyui_layer_sketch import queue_workflow as client
from PIL import Image
from support import fixtures, graphs, http_outputs, klein_models, rgba_vaes
from support.servers import FLUX_TEST_NODES, new_base_dir, start_server

pytestmark = [pytest.mark.e2e, pytest.mark.host, pytest.mark.newest_host]

WORKFLOW = Path(__file__).resolve().parents[2] / "workflows" / "api" / "flux2_klein_extract_foreground.json"
SIZE = 64
PICTURE, PLATE = "layer_sketch_example_composite_1024.png", "layer_sketch_example_background_1024.png"
OTHER_PLATE = "another_plate.png"


def _extract_lora() -> dict:
    return klein_models.klein_lora(klein_models.lora_targets(), rank=32, scale=0.05)


def _input_pictures(folder: Path) -> None:
    """The example picture and plate at the shrunk size (the pack does not copy its examples over them), and
    another plate."""
    folder.mkdir()
    plate = np.zeros((SIZE, SIZE, 3), np.uint8)
    plate[..., 0], plate[..., 1], plate[..., 2] = np.linspace(40, 220, SIZE)[:, None], 120, 90
    picture = plate.copy()
    picture[20:52, 24:40] = (60, 170, 90)  # the object
    Image.fromarray(plate).save(folder / PLATE)
    Image.fromarray(picture).save(folder / PICTURE)
    Image.fromarray(255 - plate).save(folder / OTHER_PLATE)


@pytest.fixture(scope="module")
def klein_server(tmp_path_factory, fixture_cache):
    base = new_base_dir(tmp_path_factory.mktemp, {
        "diffusion_models": {"flux-2-klein-base-4b.safetensors": klein_models.reduced_klein_file(fixture_cache)}})
    (base / "custom_nodes" / FLUX_TEST_NODES.name).symlink_to(FLUX_TEST_NODES, target_is_directory=True)
    (base / "models" / "vae").mkdir()
    _input_pictures(base / "input")
    layer_folder = tmp_path_factory.mktemp("klein_models") / "layer_model"
    layer_folder.mkdir()
    (layer_folder / "flux2_klein_alpha_rgba_vae.safetensors").symlink_to(
        rgba_vaes.rgba_vae_file(fixture_cache, "flux2", "diffusers"))
    (layer_folder / "flux2_klein_alpha_extract_4b.safetensors").symlink_to(
        fixtures.cached_file(fixture_cache, "random_flux2_klein_alpha_extract_4b_d1s1.safetensors", _extract_lora))
    server = start_server(base, layer_folder)
    yield server, base
    server.stop()


def _shrunk(**settings) -> dict:
    """The shipped graph with Qwen3-4B's conditioning from the test node, two steps; `settings` by node type."""
    conditioning = {"tokens": 8, "features": klein_models.CONTEXT, "pooled": False}
    return graphs.shrunk(WORKFLOW, conditioning, {"KSampler": {"steps": 2}}, settings)


def _extracted(klein_server, graph: dict) -> np.ndarray:
    server, base = klein_server
    return http_outputs.saved_png(server.url, base / "output", graph, SIZE, preview=True)


def test_shipped_extract_workflow_writes_a_transparent_png(klein_server):
    extracted = _extracted(klein_server, _shrunk())
    assert extracted[..., 3].std() > 1.0, "alpha must vary across the image"
    without_lora = _extracted(klein_server, _shrunk(LayerDiffuseApplyRGBAVAELoRA={"strength": 0.0}))
    assert np.abs(extracted - without_lora).max() > 2, "the Extract LoRA must change the result"


def test_the_reference_plate_reaches_the_model(klein_server):
    graph = _shrunk()
    with_plate = _extracted(klein_server, graph)
    graph["9"]["inputs"]["image"] = OTHER_PLATE  # the plate's Load Image
    assert np.abs(with_plate - _extracted(klein_server, graph)).max() > 2, "another plate, another result"


def _truncated_rgba_vae(base: Path, fixture_cache: Path) -> str:
    source = rgba_vaes.rgba_vae_file(fixture_cache, "flux2", "diffusers")
    fixtures.truncated_copy(source, base / "models" / "vae" / "truncated_flux2_alpha.safetensors")
    return "truncated_flux2_alpha.safetensors"


BAD_INPUTS = [
    ("the 9B LoRA on the 4B model", lambda base, cache: {"LayerDiffuseApplyRGBAVAELoRA": {
        "lora_name": "flux2_klein_alpha_extract_9b.safetensors"}},
     ("Klein Base 9B (width 4096), but the connected FLUX.2 model is 3072 wide",)),
    ("AlphaVAE's FLUX.1 LoRA on Klein", lambda base, cache: {"LayerDiffuseApplyRGBAVAELoRA": {
        "lora_name": "alphavae_flux1_lora.safetensors"}},
     ("a LoRA for FLUX.1-dev, but the connected MODEL is Flux2", "Load FLUX.1-dev")),
    ("a truncated RGBA VAE", lambda base, cache: {"LayerDiffuseLoadRGBAVAE": {
        "vae_name": _truncated_rgba_vae(base, cache)}},
     ("truncated_flux2_alpha.safetensors", "truncated or corrupt")),
]


@pytest.mark.parametrize("case, settings, phrases", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_gets_a_clear_error_and_the_server_keeps_serving(klein_server, fixture_cache, case, settings,
                                                                   phrases):
    server, base = klein_server
    result = client.run(server.url, _shrunk(**settings(base, fixture_cache)), timeout=600)
    assert not result.ok, f"{case}: expected an error"
    for phrase in phrases:
        assert phrase in result.error["exception_message"], f"{case}: {phrase!r} not in {result.error}"
    good = _shrunk(KSampler={"seed": len(case)})  # not a prompt the server has cached
    assert _extracted(klein_server, good)[..., 3].std() > 1.0
