"""Every shipped SD1.5 workflow, queued over HTTP on the random-weight checkpoint, writes what it promises.

Graphs are shrunk for a CPU (64 px, one sampler step, one decode variant); user files the graphs name
(a sketch, a background, a transparent PNG, a ControlNet, an edge predictor, a training folder) are
provided as the random-weight fixtures.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from comfyui_layer_sketch import queue_workflow as client
from PIL import Image
from support import fixtures, sketches
from support.fixtures import SD15_CHECKPOINT as CHECKPOINT
from support.workflow_hosts import fits_this_host

pytestmark = [pytest.mark.e2e, pytest.mark.host]

API_FOLDER = Path(__file__).resolve().parents[2] / "workflows" / "api"
SD15_WORKFLOWS = [path for path in sorted(API_FOLDER.glob("sd15_*.json")) if fits_this_host(path)]
SIZE = 64


def _input_images(folder: Path) -> None:
    """The example pictures the workflows name, at the shrunk size (replacing the pack's 512 px examples)."""
    folder.mkdir(exist_ok=True)
    rgb = (sketches.shapes_on_colour(1, SIZE, seed=11)[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    Image.fromarray(rgb).save(folder / "layer_sketch_example_background.png")
    Image.fromarray(rgb).save(folder / "layer_sketch_example_shape.png")
    sketch = (sketches.drawn_sketch(12, SIZE)[0].numpy() * 255).astype(np.uint8)
    Image.fromarray(sketch).save(folder / "layer_sketch_example_sketch.png")
    rgba = np.concatenate([rgb, np.zeros((SIZE, SIZE, 1), np.uint8)], axis=-1)
    rgba[16:48, 12:52, 3] = 255
    Image.fromarray(rgba, "RGBA").save(folder / "layer_sketch_example_transparent.png")


def _shrink(graph: dict, training_folder: Path, name: str) -> dict:
    settings = {
        "CheckpointLoaderSimple": {"ckpt_name": CHECKPOINT},
        "EmptyLatentImage": {"width": SIZE, "height": SIZE},
        "EmptyImage": {"width": SIZE, "height": SIZE},
        "KSampler": {"steps": 1},
        "LayerDiffuseDecode": {"augmentations": "1"},
        "LayerDiffuseDecodeSplit": {"augmentations": "1"},
        "ControlNetLoader": {"control_net_name": fixtures.SD15_CONTROLNET},
        "SketchGuidanceLoadPredictor": {"predictor_name": fixtures.SD15_PREDICTOR},
        "SketchGuidanceTrainPredictor": {"image_folder": str(training_folder), "steps": 1, "batch_size": 2,
                                         "resolution": SIZE, "file_name": f"e2e_{name}"},
    }
    for node in graph.values():
        node["inputs"].update(settings.get(node["class_type"], {}))
    return graph


LAYERED_SAVERS = ("LayerDiffuseSaveLayers", "LayerDiffuseSaveLayerStack")


def _layer_names(graph: dict, saver: str) -> list[str]:
    """The names the host's Add Layer nodes give the stack a Save Layer Stack node writes (none for image inputs)."""
    names, source = [], graph[saver]["inputs"].get("layers")
    while source is not None:
        names.append(graph[source[0]]["inputs"]["name"])
        source = graph[source[0]]["inputs"].get("layers")
    return names


def _decoded_rgba_outputs(graph: dict) -> set[str]:
    """Save nodes whose images come straight from a transparent decode's RGBA output."""
    decoders = {i for i, n in graph.items() if n["class_type"] in ("LayerDiffuseDecode", "LayerDiffuseDecodeSplit")}
    return {i for i, n in graph.items() if n["class_type"] == "SaveImage" and n["inputs"]["images"][0] in decoders
            and n["inputs"]["images"][1] == 0}


@pytest.mark.parametrize("path", SD15_WORKFLOWS, ids=[p.stem for p in SD15_WORKFLOWS])
def test_shipped_sd15_workflow_runs_and_writes_its_outputs(live_server, tmp_path, path):
    _input_images(live_server.base / "input")
    training = sketches.write_image_folder(tmp_path / "training", 2)
    graph = _shrink(client.load_workflow(path), training, path.stem)
    result = client.run(live_server.url, graph, timeout=900)
    assert result.ok, json.dumps(result.error, indent=1)
    savers = [i for i, n in graph.items() if n["class_type"] in ("SaveImage", *LAYERED_SAVERS)]
    for node in savers:
        images = result.outputs.get(node, {}).get("images", [])
        assert images, f"{path.name}: node {node} ({graph[node]['class_type']}) saved nothing"
        for image in images:
            file = live_server.output_dir / image["subfolder"] / image["filename"]
            picture = Image.open(file)
            assert picture.size == (SIZE, SIZE), f"{file.name} is {picture.size}"
            if node in _decoded_rgba_outputs(graph) or graph[node]["class_type"] in LAYERED_SAVERS:
                assert picture.mode == "RGBA", f"{file.name} has no alpha"
        if graph[node]["class_type"] in LAYERED_SAVERS:
            stem = images[0]["filename"].rsplit("_", 1)[0] + "_"
            folder = live_server.output_dir / images[0]["subfolder"]
            with zipfile.ZipFile(folder / f"{stem}.ora") as archive:
                assert archive.read("mimetype") == b"image/openraster"
                stack = archive.read("stack.xml").decode()
            assert (folder / f"{stem}.psd").read_bytes()[:4] == b"8BPS"
            for name in _layer_names(graph, node):
                assert f'name="{name}"' in stack, f"{path.name}: no layer {name!r} in {stack}"
    for node in _decoded_rgba_outputs(graph):
        image = result.outputs[node]["images"][0]
        alpha = np.asarray(Image.open(live_server.output_dir / image["subfolder"] / image["filename"]))[..., 3]
        assert alpha.std() > 0.5, f"{path.name}: the transparent decode's alpha is flat"
    if any(n["class_type"] == "SketchGuidanceTrainPredictor" for n in graph.values()):
        assert (live_server.base / "models" / "edge_predictor" / f"e2e_{path.stem}.safetensors").is_file()
