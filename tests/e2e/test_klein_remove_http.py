"""The shipped flux2_klein_remove graph over HTTP on a reduced FLUX.2 Klein Base 9B the host detects as FLUX.2
(Klein 9B's widths, one block of each kind), with flux2-klein-alpha's RGBA VAE (diffusers layout) and a Remove LoRA
in its published key format, random values; bad inputs answered clearly, server kept serving.

The photo comes as ComfyUI's mask editor saves a painted one (alpha 0 where painted); the text encoder (Qwen3-8B)
is swapped for the test-only conditioning node of its shapes; the graph shrinks to 64 px and two steps. The host
reads Klein's files from 0.30.0 on (0.3.75 takes every FLUX.2 file for FLUX.2-dev).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from comfyui_layer_sketch import queue_workflow as client
from PIL import Image
from support import fixtures, graphs, http_outputs, klein_models, rgba_vaes
from support.klein_models import KLEIN_9B
from support.servers import FLUX_TEST_NODES, new_base_dir, start_server

pytestmark = [pytest.mark.e2e, pytest.mark.host, pytest.mark.newest_host]

WORKFLOW = Path(__file__).resolve().parents[2] / "workflows" / "api" / "flux2_klein_remove.json"
SIZE = 64
PHOTO, OTHER_MASK = "layer_sketch_example_composite_masked_1024.png", "another_mask.png"
PHOTO_NODE = "7"  # the shipped graph's Load Image


def _remove_lora() -> dict:
    return klein_models.klein_lora(klein_models.lora_targets(size=KLEIN_9B), rank=32, scale=0.05)


def _remove_lora_file(cache: Path) -> Path:
    return fixtures.cached_file(cache, "random_flux2_klein_alpha_remove_9b_d1s1.safetensors", _remove_lora)


def _input_photos(folder: Path) -> None:
    """The example photo at the shrunk size (the pack does not copy its examples over it), with the object painted
    over as the mask editor stores it (alpha 0 there, the colour kept), and the same photo painted elsewhere."""
    folder.mkdir()
    photo = np.zeros((SIZE, SIZE, 4), np.uint8)
    photo[..., 0], photo[..., 1], photo[..., 2], photo[..., 3] = np.linspace(40, 220, SIZE)[:, None], 120, 90, 255
    photo[20:52, 24:40, :3] = (60, 170, 90)  # the object
    elsewhere = photo.copy()
    photo[20:52, 24:40, 3] = 0
    elsewhere[4:20, 40:60, 3] = 0
    Image.fromarray(photo).save(folder / PHOTO)
    Image.fromarray(elsewhere).save(folder / OTHER_MASK)


@pytest.fixture(scope="module")
def remove_server(tmp_path_factory, fixture_cache):
    base = new_base_dir(tmp_path_factory.mktemp, {
        "diffusion_models": {"flux-2-klein-base-9b.safetensors": klein_models.reduced_klein_file(fixture_cache,
                                                                                                  KLEIN_9B)}})
    (base / "custom_nodes" / FLUX_TEST_NODES.name).symlink_to(FLUX_TEST_NODES, target_is_directory=True)
    for folder in ("vae", "loras"):  # where the bad inputs' files go
        (base / "models" / folder).mkdir()
    _input_photos(base / "input")
    layer_folder = tmp_path_factory.mktemp("klein_remove_models") / "layer_model"
    layer_folder.mkdir()
    (layer_folder / "flux2_klein_alpha_rgba_vae.safetensors").symlink_to(
        rgba_vaes.rgba_vae_file(fixture_cache, "flux2", "diffusers"))
    (layer_folder / "flux2_klein_alpha_remove_9b.safetensors").symlink_to(_remove_lora_file(fixture_cache))
    server = start_server(base, layer_folder)
    yield server, base
    server.stop()


def _shrunk(**settings) -> dict:
    """The shipped graph with Qwen3-8B's conditioning from the test node, two steps; `settings` by node type."""
    conditioning = {"tokens": 8, "features": KLEIN_9B.context, "pooled": False}
    return graphs.shrunk(WORKFLOW, conditioning, {"KSampler": {"steps": 2}}, settings)


def _removed(remove_server, graph: dict) -> np.ndarray:
    """The one PNG the graph saved: the photo at its size, colour only."""
    server, base = remove_server
    return http_outputs.saved_png(server.url, base / "output", graph, SIZE, mode="RGB")


def test_shipped_remove_workflow_writes_the_photo_and_the_lora_acts(remove_server):
    removed = _removed(remove_server, _shrunk())
    assert removed.std() > 1.0, "a picture, not a flat colour"
    without_lora = _removed(remove_server, _shrunk(LayerDiffuseApplyRGBAVAELoRA={"strength": 0.0}))
    assert np.abs(removed - without_lora).max() > 2, "the Remove LoRA must change the result"


def test_the_painted_mask_reaches_the_model(remove_server):
    graph = _shrunk()
    painted = _removed(remove_server, graph)
    graph[PHOTO_NODE]["inputs"]["image"] = OTHER_MASK
    assert np.abs(painted - _removed(remove_server, graph)).max() > 2, "another mask, another result"
    unmarked = _removed(remove_server, _shrunk(LayerDiffuseRGBAVAEEncode={"masked_alpha": 1.0}))
    assert np.abs(painted - unmarked).max() > 2, "alpha 0.5 over the object must reach the model"


def _truncated_copy(source: Path, target: Path) -> str:
    fixtures.truncated_copy(source, target)
    return target.name


BAD_INPUTS = [
    ("the Extract-4B LoRA on the 9B model", lambda base, cache: {"LayerDiffuseApplyRGBAVAELoRA": {
        "lora_name": "flux2_klein_alpha_extract_4b.safetensors"}},
     ("Klein Base 4B (width 3072), but the connected FLUX.2 model is 4096 wide",)),
    ("a truncated LoRA", lambda base, cache: {"LayerDiffuseApplyRGBAVAELoRA": {
        "lora_name": _truncated_copy(_remove_lora_file(cache),
                                     base / "models" / "loras" / "truncated_remove.safetensors")}},
     ("truncated_remove.safetensors", "truncated or corrupt")),
    ("a truncated RGBA VAE", lambda base, cache: {"LayerDiffuseLoadRGBAVAE": {
        "vae_name": _truncated_copy(rgba_vaes.rgba_vae_file(cache, "flux2", "diffusers"),
                                    base / "models" / "vae" / "truncated_flux2_alpha.safetensors")}},
     ("truncated_flux2_alpha.safetensors", "truncated or corrupt")),
]


@pytest.mark.parametrize("case, settings, phrases", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_gets_a_clear_error_and_the_server_keeps_serving(remove_server, fixture_cache, case, settings,
                                                                   phrases):
    server, base = remove_server
    result = client.run(server.url, _shrunk(**settings(base, fixture_cache)), timeout=600)
    assert not result.ok, f"{case}: expected an error"
    for phrase in phrases:
        assert phrase in result.error["exception_message"], f"{case}: {phrase!r} not in {result.error}"
    good = _shrunk(KSampler={"seed": len(case)})  # not a prompt the server has cached
    assert _removed(remove_server, good).std() > 1.0
