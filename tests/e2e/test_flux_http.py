"""The shipped FLUX graphs over HTTP on a server with the reduced FLUX.1-dev (the host detects it from the file),
a random `ae` VAE, the random FLUX LoRA and TransparentVAE.pth, and AlphaVAE's RGBA VAE and LoRA in their published
layouts; bad inputs answered clearly, server kept serving.

Only the text encoders are swapped for a test-only node of the same CONDITIONING shapes (T5-XXL is 4.8 B
parameters); the graphs are shrunk to 64 px and two steps for a CPU.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from comfyui_layer_sketch import queue_workflow as client
from PIL import Image
from support import fixtures, flux_models, graphs, http_outputs, rgba_vaes
from support.servers import flux_setup, start_server

pytestmark = [pytest.mark.e2e, pytest.mark.host]

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows" / "api"
SIZE = 64


@pytest.fixture(scope="module")
def flux_server(tmp_path_factory, fixture_cache):
    base, layer_folder = flux_setup(tmp_path_factory.mktemp, fixture_cache)
    (base / "input").mkdir()
    rgba = np.zeros((SIZE, SIZE, 4), np.uint8)
    rgba[..., :3] = (40, 160, 220)
    rgba[16:48, 20:44, 3] = 255
    Image.fromarray(rgba, "RGBA").save(base / "input" / "layer_sketch_example_transparent_1024.png")
    server = start_server(base, layer_folder)
    yield server, base, layer_folder
    server.stop()


SHRINK = {"EmptySD3LatentImage": {"width": SIZE, "height": SIZE}, "KSampler": {"steps": 2},
          "LayerDiffuseDecode": {"augmentations": "2"}}


def _shrunk(name: str, **settings) -> dict:
    """A shipped FLUX graph at 64 px, 2 steps, 2 decode variants, the text encoders swapped for test conditioning."""
    return graphs.shrunk(WORKFLOWS / name, {"tokens": 16}, SHRINK, settings)


def _rgba_png(flux_server, graph: dict) -> np.ndarray:
    server, base, _ = flux_server
    return http_outputs.saved_png(server.url, base / "output", graph, SIZE, preview=True)


def test_shipped_flux_workflow_writes_a_transparent_png(flux_server):
    patched = _rgba_png(flux_server, _shrunk("flux_transparent.json"))
    assert patched[..., 3].std() > 1.0, "alpha must vary across the image"
    assert (flux_server[2] / "TransparentVAE.safetensors").exists(), "the pickle was converted once, beside it"
    unpatched = _rgba_png(flux_server, _shrunk("flux_transparent.json", LayerDiffuseApply={"weight": 0.0}))
    assert np.abs(patched - unpatched).max() > 2, "the FLUX LoRA must change the image"


def test_shipped_flux_img2img_workflow_writes_a_transparent_png(flux_server):
    image = _rgba_png(flux_server, _shrunk("flux_transparent_img2img.json"))
    assert image[..., 3].std() > 1.0
    stronger = _rgba_png(flux_server, _shrunk("flux_transparent_img2img.json", KSampler={"denoise": 0.3}))
    assert np.abs(image - stronger).max() > 2, "denoise acts on the encoded transparent picture"


def _decode_of_four_channels() -> dict:
    graph = _shrunk("flux_transparent.json")
    graph["20"] = {"class_type": "EmptyLatentImage", "inputs": {"width": SIZE, "height": SIZE, "batch_size": 1}}
    graph["11"]["inputs"].update(samples=["20", 0], sd_version="FLUX")
    del graph["11"]["inputs"]["model"]
    return graph


BAD_INPUTS = [
    ("SD1.5 LayerDiffusion mode on FLUX",
     lambda: _shrunk("flux_transparent.json", LayerDiffuseApply={"mode": "SD1.5 transparent (attention sharing)"}),
     ("made for SD1.5 models", "the connected MODEL is FLUX")),
    ("FLUX decode of a 4-channel latent", _decode_of_four_channels,
     ("The latent has 4 channels", "FLUX latents have 16")),
]


@pytest.mark.parametrize("case, graph, phrases", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_gets_a_clear_error_and_the_server_keeps_serving(flux_server, case, graph, phrases):
    server, base, _ = flux_server
    result = client.run(server.url, graph(), timeout=600)
    assert not result.ok, f"{case}: expected an error"
    for phrase in phrases:
        assert phrase in result.error["exception_message"], f"{case}: {phrase!r} not in {result.error}"
    good = _shrunk("flux_transparent.json", LayerDiffuseDecode={"sub_batch_size": len(case) % 7 + 1})  # uncached
    assert _rgba_png(flux_server, good)[..., 3].std() > 1.0


def test_truncated_transparent_vae_is_refused_then_a_good_file_works(flux_server, fixture_cache):
    server, base, layer_folder = flux_server
    pth, converted = layer_folder / "TransparentVAE.pth", layer_folder / "TransparentVAE.safetensors"
    converted.unlink(missing_ok=True)
    pth.unlink()
    fixtures.truncated_copy(flux_models.transparent_vae_pth(fixture_cache), pth)
    try:
        fresh = {"LayerDiffuseDecode": {"sub_batch_size": 3}}  # not a prompt the server has cached
        result = client.run(server.url, _shrunk("flux_transparent.json", **fresh), timeout=600)
        assert not result.ok
        message = result.error["exception_message"]
        assert "could not be read as a PyTorch weight file" in message and "delete it" in message, message
        assert not converted.exists() and not list(layer_folder.glob("*.part")), "nothing half-written is left"
    finally:
        pth.unlink()
        shutil.copy(flux_models.transparent_vae_pth(fixture_cache), pth)
    retried = _rgba_png(flux_server, _shrunk("flux_transparent.json", LayerDiffuseDecode={"sub_batch_size": 5}))
    assert retried[..., 3].std() > 1.0 and converted.exists()


# --- AlphaVAE: the RGBA VAE and its LoRA ----------------------------------------------------------------------------

ALPHAVAE = "flux_alphavae_transparent.json"


def test_shipped_alphavae_workflow_writes_a_transparent_png(flux_server):
    with_lora = _rgba_png(flux_server, _shrunk(ALPHAVAE))
    assert with_lora[..., 3].std() > 1.0, "alpha must vary across the image"
    without = _rgba_png(flux_server, _shrunk(ALPHAVAE, LayerDiffuseApplyRGBAVAELoRA={"strength": 0.0}))
    assert np.abs(with_lora - without).max() > 2, "AlphaVAE's LoRA must change the image"


def _truncated_rgba_vae(base: Path, fixture_cache: Path) -> str:
    source = rgba_vaes.rgba_vae_file(fixture_cache, "alphavae", "diffusers")
    fixtures.truncated_copy(source, base / "models" / "vae" / "truncated_alphavae.safetensors")
    return "truncated_alphavae.safetensors"


RGBA_BAD_INPUTS = [
    ("an RGB VAE given as RGBA", lambda base, cache: {"LayerDiffuseLoadRGBAVAE": {"vae_name": "ae.safetensors"}},
     ("ae.safetensors is a VAE with 3 image channels in and 3 out", "Load VAE")),
    ("a LoRA for another family", lambda base, cache: {"LayerDiffuseApplyRGBAVAELoRA": {
        "lora_name": "flux2_klein_alpha_extract_4b.safetensors"}},
     ("is a LoRA for FLUX.2 Klein Base 4B, but the connected MODEL is Flux", "Load FLUX.2 Klein Base 4B")),
    ("a truncated RGBA VAE", lambda base, cache: {"LayerDiffuseLoadRGBAVAE": {
        "vae_name": _truncated_rgba_vae(base, cache)}},
     ("truncated_alphavae.safetensors", "truncated or corrupt")),
]


@pytest.mark.parametrize("case, settings, phrases", RGBA_BAD_INPUTS, ids=[c[0] for c in RGBA_BAD_INPUTS])
def test_bad_rgba_vae_input_gets_a_clear_error_and_the_server_keeps_serving(flux_server, fixture_cache, case,
                                                                            settings, phrases):
    server, base, _ = flux_server
    result = client.run(server.url, _shrunk(ALPHAVAE, **settings(base, fixture_cache)), timeout=600)
    assert not result.ok, f"{case}: expected an error"
    for phrase in phrases:
        assert phrase in result.error["exception_message"], f"{case}: {phrase!r} not in {result.error}"
    good = _shrunk(ALPHAVAE, KSampler={"seed": len(case)})  # not a prompt the server has cached
    assert _rgba_png(flux_server, good)[..., 3].std() > 1.0
