"""Every error the pack raises on bad input, over HTTP, in one table: the message says what is wrong and what
to do, nothing partial is left behind, and the server runs a good prompt right after each."""

from __future__ import annotations

import pytest
import torch
from comfyui_layer_sketch import queue_workflow as client
from comfyui_layer_sketch.sketch_guidance.features import LAYER_SETS
from comfyui_layer_sketch.sketch_guidance.predictor import EdgePredictor, PredictorInfo, save_predictor
from PIL import Image
from support import fixtures, sketches
from support.fixtures import SD15_CHECKPOINT as CHECKPOINT
from support.graphs import decode_graph, encode_graph, patched_sampling_graph

pytestmark = [pytest.mark.e2e, pytest.mark.host]

SDXL_DECODER = "vae_transparent_decoder.safetensors"


def _sketch_graph(predictor: str = fixtures.SD15_PREDICTOR, sketch: str = "table_sketch.png", latents: int = 1,
                  sketches_in_batch: int = 1, strength: float = 1.6) -> dict:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a house"}},
        "3": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": latents}},
        "4": {"class_type": "LoadImage", "inputs": {"image": sketch}},
        "5": {"class_type": "RepeatImageBatch", "inputs": {"image": ["4", 0], "amount": sketches_in_batch}},
        "6": {"class_type": "SketchGuidanceLoadPredictor", "inputs": {"predictor_name": predictor}},
        "7": {"class_type": "SketchGuidanceApply", "inputs": {"model": ["1", 0], "vae": ["1", 2],
                                                              "edge_predictor": ["6", 0], "sketch": ["5", 0],
                                                              "strength": strength, "end_percent": 1.0}},
        "8": {"class_type": "KSampler", "inputs": {"model": ["7", 0], "positive": ["2", 0], "negative": ["2", 0],
                                                   "latent_image": ["3", 0], "seed": 0, "steps": 1, "cfg": 5.0,
                                                   "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "9": {"class_type": "SaveLatent", "inputs": {"samples": ["8", 0], "filename_prefix": "e2e/table"}},
    }


def _layers_graph(node: str, width: int) -> dict:
    images = {"1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
              "2": {"class_type": "EmptyImage", "inputs": {"width": width, "height": 64, "batch_size": 1,
                                                           "color": 255}}}
    if node == "LayerDiffuseComposite":
        return images | {"3": {"class_type": node, "inputs": {"background": ["1", 0], "foreground": ["2", 0]}},
                         "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}}}
    return images | {"3": {"class_type": node, "inputs": {"background": ["1", 0], "foreground": ["2", 0],
                                                          "filename_prefix": "e2e/table", "formats": "ora + png"}}}


def _train_graph(folder: str, file_name: str = "table") -> dict:
    return {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT}},
            "2": {"class_type": "SketchGuidanceTrainPredictor", "inputs": {
                "model": ["1", 0], "vae": ["1", 2], "clip": ["1", 1], "image_folder": folder, "steps": 1,
                "batch_size": 1, "learning_rate": 1e-3, "file_name": file_name, "resolution": 64}}}


# (case, files to place: {(folder, name): content}, graph or a function of the tmp dir, phrases)
BAD_INPUTS = [
    ("missing weight file, offline", {}, decode_graph(64, 64, 64, 64, "SDXL"),
     [SDXL_DECODER, "could not be downloaded", "layer_model", "by hand"]),
    ("truncated safetensors", {("layer", SDXL_DECODER): "truncated decoder"},
     decode_graph(64, 64, 64, 64, "SDXL", sub_batch_size=7), ["truncated or corrupt", "delete it"]),
    ("decoder file of the wrong kind", {("layer", SDXL_DECODER): "encoder"},
     decode_graph(64, 64, 64, 64, "SDXL", sub_batch_size=6),
     ["does not hold a LayerDiffusion transparent decoder", SDXL_DECODER]),
    ("latent and image sizes differ", {}, decode_graph(64, 64, 72, 64),
     ["The latent is 8x8", "Connect the IMAGE that VAE Decode produced"]),
    ("RGB image to the encoder without a mask", {}, encode_graph(), ["3 channels and no mask", "connect its MASK"]),
    ("batch not a multiple of the layers", {},
     decode_graph(64, 64, 64, 64, node="LayerDiffuseDecodeSplit", batch=4, layers=3), ["not a multiple of 3 layers"]),
    ("sd_version auto without a model", {}, decode_graph(64, 64, 64, 64, "auto"), ["no MODEL is connected"]),
    ("SDXL mode on an SD1.5 model", {}, patched_sampling_graph(
        {"class_type": "LayerDiffuseApply", "inputs": {"mode": "SDXL transparent (conv injection)", "weight": 1.0}}),
     ["made for SDXL models, but the connected MODEL is SD1.5"]),
    ("condition image of another size", {}, patched_sampling_graph(
        {"class_type": "LayerDiffuseCondJointApply",
         "inputs": {"image": ["8", 0], "mode": "SD1.5 foreground to background + blended", "weight": 1.0}},
        batch=2) | {"8": {"class_type": "EmptyImage", "inputs": {"width": 96, "height": 64, "batch_size": 1,
                                                                 "color": 0}}},
     ["condition image does not match the size being generated"]),
    ("joint batch not a multiple of 3", {}, patched_sampling_graph(
        {"class_type": "LayerDiffuseJointApply", "inputs": {"weight": 1.0}}, batch=2),
     ["batch size is 2, which is not a multiple of the 3 layers"]),
    ("layers of different sizes to composite", {}, _layers_graph("LayerDiffuseComposite", 72),
     ["same size (background 64x64, foreground 72x64)", "Upscale Image"]),
    ("layers of different sizes to save", {}, _layers_graph("LayerDiffuseSaveLayers", 72), ["same size"]),
    ("edge predictor for SDXL on an SD1.5 model", {}, _sketch_graph(fixtures.SDXL_PREDICTOR),
     ["trained for SDXL models, but the connected MODEL is SD1.5", "train one"]),
    ("edge predictor for another UNet shape", {("predictor", "table_7040.safetensors"): "predictor 7040"},
     _sketch_graph("table_7040.safetensors"), ["reads 7040 feature channels", "has 9280 there"]),
    ("file that is no edge predictor", {("predictor", "table_foreign.safetensors"): "encoder"},
     _sketch_graph("table_foreign.safetensors"), ["not an edge predictor saved by this pack"]),
    ("community checkpoint of unknown width", {("predictor", "table_mystery.pt"): "mystery pt"},
     _sketch_graph("table_mystery.pt"), ["not a known edge predictor checkpoint (input width 100"]),
    ("blank sketch", {("input", "table_blank.png"): "blank png"}, _sketch_graph(sketch="table_blank.png"),
     ["The sketch is blank", "dark lines on light paper"]),
    ("more sketches than latents", {}, _sketch_graph(latents=3, sketches_in_batch=2),
     ["The sketch batch has 2 images but 3 latents", "one per latent"]),
    ("training folder without images", {}, lambda tmp: _train_graph(str(tmp / "empty")), ["holds no images"]),
    ("training folder with a broken image", {}, lambda tmp: _train_graph(str(tmp / "broken")),
     ["cannot be read (broken.png)", "remove or replace"]),
    ("training file name with a folder", {}, lambda tmp: _train_graph(str(tmp / "good"), "../escape"),
     ["must be a plain file name"]),
]


def _content(kind: str, cache, tmp) -> bytes:
    if kind == "truncated decoder":
        return fixtures.decoder_file(cache).read_bytes()[:100_000]
    if kind == "encoder":
        return fixtures.encoder_file(cache).read_bytes()
    if kind == "predictor 7040":
        torch.manual_seed(0)
        save_predictor(EdgePredictor(PredictorInfo("SD1.5", "paper", LAYER_SETS["paper"], 7040)), str(tmp / "p"))
        return (tmp / "p").read_bytes()
    if kind == "mystery pt":
        torch.save({"layers.0.weight": torch.zeros(512, 100)}, tmp / "m.pt")
        return (tmp / "m.pt").read_bytes()
    if kind == "blank png":
        Image.new("RGB", (64, 64), (250, 250, 250)).save(tmp / "b.png")
        return (tmp / "b.png").read_bytes()
    raise ValueError(kind)


@pytest.mark.parametrize("case, files, graph, phrases", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_gets_a_clear_error_and_the_server_keeps_serving(live_server, fixture_cache, tmp_path, case,
                                                                   files, graph, phrases):
    folders = {"layer": live_server.layer_folder, "input": live_server.base / "input",
               "predictor": live_server.base / "models" / "edge_predictor"}
    (tmp_path / "empty").mkdir()
    sketches.write_image_folder(tmp_path / "good", 2)
    (sketches.write_image_folder(tmp_path / "broken", 2) / "broken.png").write_bytes(b"not a png")
    folders["input"].mkdir(exist_ok=True)
    Image.fromarray((sketches.drawn_sketch(3)[0].numpy() * 255).astype("uint8")).save(
        folders["input"] / "table_sketch.png")
    placed = []
    for (folder, name), kind in files.items():
        placed.append(folders[folder] / name)
        placed[-1].write_bytes(_content(kind, fixture_cache, tmp_path))
    try:
        result = client.run(live_server.url, graph(tmp_path) if callable(graph) else graph, timeout=600)
    finally:
        for path in placed:
            path.unlink(missing_ok=True)
    assert not result.ok, f"{case}: expected an error"
    message = result.error["exception_message"]
    for phrase in phrases:
        assert phrase in message, f"{case}: {phrase!r} not in {message!r}"
    assert not list(live_server.layer_folder.glob("*.part")), "no partial download may be left behind"
    assert not list((live_server.base / "models" / "edge_predictor").glob("*.part"))

    ok = client.run(live_server.url, decode_graph(64, 64, 64, 64, sub_batch_size=len(case) % 60 + 1),
                    timeout=600)
    assert ok.ok, ok.error
    assert Image.open(client.output_paths(ok, live_server.output_dir)[0]).mode == "RGBA"


def test_out_of_range_settings_are_refused_before_anything_runs(live_server):
    with pytest.raises(client.RejectedError, match="strength"):
        client.submit(live_server.url, _sketch_graph(strength=11.0))
