"""Codec training over HTTP: the shipped train_transparent_vae workflow on a random FLUX.2 VAE, and bad inputs to
Layer Diffuse Train Transparent VAE, each refused with a message that says what to do, the server still serving."""

from __future__ import annotations

import io
import json
import re
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from comfyui_layer_sketch import queue_workflow as client
from comfyui_layer_sketch.layer_model import trained_codec
from PIL import Image
from support import host_vaes
from support.fixtures import SD15_CHECKPOINT
from support.graphs import decode_graph
from support.shapes import write_rgba_folder

pytestmark = pytest.mark.e2e

WORKFLOW = Path(__file__).resolve().parents[2] / "workflows" / "api" / "train_transparent_vae.json"
REDUCED = {"steps": 2, "batch_size": 2, "resolution": 64, "decoder_width": 0.125}


def _saved_path(result: client.PromptResult, node: str) -> Path:
    report = json.dumps(result.outputs[node])
    found = re.search(r"Saved (\S+?\.safetensors)", report)
    assert found, report
    return Path(found.group(1))


def _fetched(url: str, image: dict) -> Image.Image:
    query = urllib.parse.urlencode({key: image.get(key, "") for key in ("filename", "subfolder", "type")})
    with urllib.request.urlopen(f"{url}/view?{query}", timeout=60) as response:
        return Image.open(io.BytesIO(response.read()))


def _training_graph(folder: Path, save_name: str, **inputs) -> dict:
    settings = {"vae": ["1", 2], "image_folder": str(folder), "learning_rate": 1e-3, "seed": 0,
                "save_name": save_name, "latent_format": "SD15", **REDUCED, **inputs}
    return {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": SD15_CHECKPOINT}},
            "2": {"class_type": "LayerDiffuseTrainTransparentVAE", "inputs": settings},
            "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 3]}}}


@pytest.fixture(scope="module")
def rgba_folder(tmp_path_factory) -> Path:
    return write_rgba_folder(tmp_path_factory.mktemp("rgba"), 5, 64, seed=2)  # 1 held out


def test_shipped_workflow_trains_a_flux2_codec(live_server, fixture_cache, rgba_folder):
    vae_folder = live_server.base / "models" / "vae"
    vae_folder.mkdir(parents=True, exist_ok=True)
    (vae_folder / "flux2-vae.safetensors").unlink(missing_ok=True)
    (vae_folder / "flux2-vae.safetensors").symlink_to(host_vaes.FILES["flux2"](fixture_cache))
    graph = client.load_workflow(WORKFLOW)
    graph["2"]["inputs"].update(image_folder=str(rgba_folder), save_name="e2e_flux2_codec", **REDUCED)
    result = client.run(live_server.url, graph, timeout=900)
    assert result.ok, json.dumps(result.error, indent=1)

    saved = _saved_path(result, "5")
    assert saved.name == "e2e_flux2_codec.safetensors" and saved.parent.name == "layer_model"
    info = trained_codec.read_info(str(saved))
    assert (info.latent_format, info.channels, info.downscale, info.steps) == ("Flux2", 128, 16, 2)
    assert set(info.validation) >= {"alpha_error", "harmlessness_psnr"}
    report = json.dumps(result.outputs["5"])
    assert "5 transparent images, 1 held out" in report and "harmlessness" in report
    previews = [image for image in result.images() if image["type"] == "temp"]
    assert len(previews) == 2, previews  # the held-out image decoded, and the loss plot
    sizes = sorted(_fetched(live_server.url, image).size for image in previews)
    assert sizes == [(64, 64), (640, 360)], sizes
    _round_trip_through_the_nodes(live_server, saved.name)


def _round_trip_through_the_nodes(live_server, codec: str) -> None:
    """A transparent PNG through Layer Diffuse Encode, VAE Decode and Layer Diffuse Decode with the new codec: a
    transparent PNG of the same size comes out (a 2-step codec on random weights: shapes, not quality)."""
    rgba = write_rgba_folder(live_server.base / "input" / "codec_round_trip", 1, 64, seed=9)
    graph = {
        "10": {"class_type": "LoadImage", "inputs": {"image": "codec_round_trip/shape_000.png"}},
        "11": {"class_type": "VAELoader", "inputs": {"vae_name": "flux2-vae.safetensors"}},
        "12": {"class_type": "LayerDiffuseEncode", "inputs": {
            "image": ["10", 0], "mask": ["10", 1], "vae": ["11", 0], "sd_version": "auto", "codec": codec}},
        "13": {"class_type": "VAEDecode", "inputs": {"samples": ["12", 0], "vae": ["11", 0]}},
        "14": {"class_type": "LayerDiffuseDecode", "inputs": {
            "samples": ["12", 0], "images": ["13", 0], "sd_version": "auto", "augmentations": "1",
            "sub_batch_size": 8, "codec": codec}},
        "15": {"class_type": "SaveImage", "inputs": {"images": ["14", 0], "filename_prefix": "e2e/flux2_codec"}},
    }
    result = client.run(live_server.url, graph, timeout=900)
    assert result.ok, json.dumps(result.error, indent=1)
    [png] = client.output_paths(result, live_server.output_dir)
    image = Image.open(png)
    assert image.mode == "RGBA" and image.size == Image.open(rgba / "shape_000.png").size


def test_bad_training_inputs_are_refused_and_the_server_keeps_serving(live_server, rgba_folder, tmp_path):
    (tmp_path / "empty").mkdir()
    rgb_only = tmp_path / "rgb"
    rgb_only.mkdir()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(rgb_only / "opaque.png")
    cases = [
        (_training_graph(tmp_path / "empty", "e2e_bad"), ["holds no usable transparent image"]),
        (_training_graph(rgb_only, "e2e_bad"), ["holds no usable transparent image", "1 without an alpha channel"]),
        (_training_graph(rgba_folder, "e2e_bad", latent_format="auto"),
         ["could be the SD1.5 or the SDXL VAE", "Set latent_format to SD15 or SDXL"]),
        (_training_graph(rgba_folder, "e2e_bad", latent_format="Flux2"), ["latent_format is Flux2"]),
        (_training_graph(rgba_folder, "../escape"), ["must be a plain file name"]),
        (_training_graph(rgba_folder, "e2e_bad", init="published", decoder_width=0.5),
         ["keeps its decoder width"]),
    ]
    good = _training_graph(rgba_folder, "e2e_good_sd15", steps=1)
    first = client.run(live_server.url, good, timeout=900)
    assert first.ok, json.dumps(first.error, indent=1)
    cases.append((_training_graph(rgba_folder, "e2e_good_sd15", steps=1, learning_rate=5e-4),
                  ["holds the saved state of another run", "config.learning_rate: saved 0.001, now 0.0005"]))
    for index, (graph, phrases) in enumerate(cases):
        result = client.run(live_server.url, graph, timeout=900)
        assert not result.ok, phrases
        message = result.error["exception_message"]
        assert all(phrase in message for phrase in phrases), (phrases, message)
        # A prompt of its own each time (the host would answer a repeated one from its cache).
        again = client.run(live_server.url, decode_graph(64, 64, 64, 64, sub_batch_size=index + 1), timeout=600)
        assert again.ok, json.dumps(again.error, indent=1)
    saved = _saved_path(first, "3")
    assert trained_codec.read_info(str(saved)).latent_format == "SD15"
