"""The shipped qwen_image_layered_to_psd graph over HTTP: the host's own Qwen-Image-Layered (a reduced transformer the
host detects from the file, its layered RGBA VAE, narrow) splits a picture into RGBA layers, and the pack writes
them as one ORA and one PSD plus a PNG per layer; an independent reader checks the PSD. Qwen-Image's RGB VAE in
the layered VAE's place is refused by name, and the server keeps serving.

Qwen2.5-VL's conditioning comes from the test-only node of its shapes; the graph shrinks to about 96 px, two
layers and two steps. The host has Qwen-Image-Layered from 0.30.0 on.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from comfyui_layer_sketch import queue_workflow as client
from PIL import Image
from psd_tools import PSDImage
from support import graphs, qwen_layered_models
from support.servers import FLUX_TEST_NODES, new_base_dir, start_server

pytestmark = [pytest.mark.e2e, pytest.mark.host, pytest.mark.newest_host]

WORKFLOW = Path(__file__).resolve().parents[2] / "workflows" / "api" / "qwen_image_layered_to_psd.json"
PICTURE, OTHER_PICTURE = "layer_sketch_example_composite_1024.png", "another_picture.png"
LAYERS, SIDE = 2, 96  # 64 px scaled to 0.01 megapixels (the node's least) in steps of 16


def _pictures(folder: Path) -> None:
    folder.mkdir()
    picture = np.zeros((64, 64, 3), np.uint8)
    picture[...] = (200, 190, 170)
    picture[16:56, 24:40] = (60, 150, 90)
    Image.fromarray(picture).save(folder / PICTURE)
    Image.fromarray(255 - picture).save(folder / OTHER_PICTURE)


@pytest.fixture(scope="module")
def qwen_server(tmp_path_factory, fixture_cache):
    base = new_base_dir(tmp_path_factory.mktemp, {
        "diffusion_models": {"qwen_image_layered_bf16.safetensors":
                             qwen_layered_models.reduced_layered_file(fixture_cache)},
        "vae": {"qwen_image_layered_vae.safetensors": qwen_layered_models.wan_vae_file(fixture_cache, 4),
                "qwen_image_vae.safetensors": qwen_layered_models.wan_vae_file(fixture_cache, 3)}})
    (base / "custom_nodes" / FLUX_TEST_NODES.name).symlink_to(FLUX_TEST_NODES, target_is_directory=True)
    _pictures(base / "input")
    layer_folder = tmp_path_factory.mktemp("qwen_models") / "layer_model"
    layer_folder.mkdir()
    server = start_server(base, layer_folder)
    yield server, base
    server.stop()


SHRINK = {"ImageScaleToTotalPixels": {"megapixels": 0.01}, "EmptyQwenImageLayeredLatentImage": {"layers": LAYERS},
          "KSampler": {"steps": 2}}


def _shrunk(**settings) -> dict:
    conditioning = {"tokens": 8, "features": qwen_layered_models.TEXT_FEATURES, "pooled": False}
    return graphs.shrunk(WORKFLOW, conditioning, SHRINK, settings)


def _layers(qwen_server, graph: dict) -> tuple[list[np.ndarray], Path]:
    """The layer PNGs the stack node wrote (bottom first) and the stem of its ORA/PSD files."""
    server, base = qwen_server
    result = client.run(server.url, graph, timeout=900)
    assert result.ok, json.dumps(result.error, indent=1)
    saved = [Path(base / "output" / i["subfolder"] / i["filename"]) for i in result.saved_images()]
    assert len(saved) == LAYERS, f"one PNG per layer: {saved}"
    assert [i for i in result.images() if i["type"] == "temp"], "the layers on a checkerboard are shown in the UI"
    pictures = [Image.open(path) for path in saved]
    assert all(p.mode == "RGBA" and p.size == (SIDE, SIDE) for p in pictures), [(p.mode, p.size) for p in pictures]
    return [np.asarray(p).astype(int) for p in pictures], saved[0].with_name(saved[0].name[:-len("01.png")])


def test_shipped_layered_workflow_writes_the_layers_as_ora_psd_and_pngs(qwen_server):
    layers, stem = _layers(qwen_server, _shrunk())
    assert all(layer[..., 3].std() > 1.0 for layer in layers), "each layer's alpha varies"
    psd = PSDImage.open(f"{stem}.psd")
    assert (psd.width, psd.height) == (SIDE, SIDE) and len(psd) == LAYERS
    for read, written in zip(psd, layers, strict=True):  # bottom first, as written
        pixels = np.asarray(read.topil().convert("RGBA")).astype(int)
        assert read.size == (SIDE, SIDE) and np.abs(pixels[..., 3] - written[..., 3]).max() <= 1
    with zipfile.ZipFile(f"{stem}.ora") as archive:
        assert archive.read("stack.xml").decode().count("<layer ") == LAYERS


def test_the_picture_reaches_the_model(qwen_server):
    """Everything else equal (seed included; sampling on a CPU is deterministic), another picture gives other layers.
    The one random block barely attends to the reference tokens, so any change counts."""
    first, _ = _layers(qwen_server, _shrunk())
    other, _ = _layers(qwen_server, _shrunk(LoadImage={"image": OTHER_PICTURE}))
    assert max(np.abs(a - b).max() for a, b in zip(first, other, strict=True)) > 0, "another picture, other layers"


def test_the_rgb_vae_is_refused_by_name_then_the_server_keeps_serving(qwen_server):
    server, _ = qwen_server
    result = client.run(server.url, _shrunk(VAELoader={"vae_name": "qwen_image_vae.safetensors"}), timeout=600)
    assert not result.ok
    message = result.error["exception_message"]
    assert "The connected VAE has 3 image channels, so its decode has no alpha" in message, message
    layers, _ = _layers(qwen_server, _shrunk(KSampler={"seed": 5}))
    assert layers[0][..., 3].std() > 1.0
