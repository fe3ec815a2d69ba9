"""Teaching Z-Image transparency over HTTP: the shipped train_transparency_lora_zimage graph trains a LoRA with the
host's Train LoRA on a reduced Z-Image (detected by the host as Z-Image), Save LoRA writes it, and the shipped
zimage_transparent graph samples with it and writes an RGBA PNG; every key of the saved LoRA applies, and the
model's samples with the LoRA decode to alpha made like the training set's, more than the base model's do. Bad
inputs are refused with what to do, the server serving on.

Stand-ins, as a CPU and no downloads require: the SD1.5 checkpoint's real CLIP-L for Qwen3-4B (the reduced model's
caption embedder is 768 wide), the host's `ae` with weights that give back what they encoded
(support/passthrough_vae.py: a random VAE's latents carry no picture to learn), and a transparency codec taught
for that VAE by the pack's codec trainer (support/small_codecs.py: the published FLUX codec's weights cannot be
had here). Graphs shrink to 64 px; the server runs alone, in bf16.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from comfyui_layer_sketch import queue_workflow as client
from PIL import Image
from support import fixtures, host_vaes, http_outputs, shapes, zimage_models
from support.servers import new_base_dir, pause_others, resume, start_server
from support.small_codecs import trained_codec_file

pytestmark = [pytest.mark.e2e, pytest.mark.host, pytest.mark.newest_host]  # Train LoRA's outputs: 0.30.0 on

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows" / "api"
SIZE, IMAGES, CAPTION = 64, 8, "a round sticker"
CODEC = "zimage_test_codec.safetensors"
# The shipped graph's settings (bf16, gradient checkpointing) but the length of the run, a higher rate and the
# host's bypass mode: 0.9 s a step here at 64 px (merged weights: 11.5 s), so that the LoRA learns in a CI run.
TRAINING = {"steps": 150, "learning_rate": 5e-3, "rank": 16, "grad_accumulation_steps": 1, "bypass_mode": True}
SEEDS = range(4)


def write_discs(folder: Path) -> Path:
    # Dark discs: the codec's VAE sees them composited on 50% grey, so the set's pictures carry the disc too
    # (mid-grey discs would vanish into the grey).
    return shapes.write_discs(folder, IMAGES, SIZE, CAPTION, brightest=79)


@pytest.fixture(scope="module")
def zimage_server(tmp_path_factory, fixture_cache):
    base = new_base_dir(tmp_path_factory.mktemp, {
        "diffusion_models": {"z_image_turbo_bf16.safetensors": zimage_models.reduced_zimage_file(fixture_cache)},
        "vae": {"ae.safetensors": host_vaes.FILES["ae_passthrough"](fixture_cache)},
        "checkpoints": {fixtures.SD15_CHECKPOINT: fixtures.sd15_checkpoint(fixture_cache)},
    })
    layer_folder = tmp_path_factory.mktemp("zimage_models") / "layer_model"
    layer_folder.mkdir()
    (layer_folder / CODEC).symlink_to(trained_codec_file(fixture_cache, "ae_passthrough", "Flux"))
    paused = pause_others()  # training peaks at 9 GB resident; the SD1.5 server may hold as much
    server = start_server(base, layer_folder, ("--bf16-unet",))  # as the shipped graph trains: bf16
    yield server, base
    server.stop()
    resume(paused)


def _with_clip_l(graph: dict) -> dict:
    """The graph with its Qwen3-4B CLIPLoader swapped for the SD1.5 checkpoint's CLIP-L (same node id)."""
    [loader] = [node_id for node_id, node in graph.items() if node["class_type"] == "CLIPLoader"]
    graph[loader] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": fixtures.SD15_CHECKPOINT}}
    for node in graph.values():
        for name, value in node["inputs"].items():
            if value == [loader, 0]:
                node["inputs"][name] = [loader, 1]
    return graph


def _shrunk(name: str, **settings: dict) -> dict:
    graph = _with_clip_l(client.load_workflow(WORKFLOWS / name))
    common = {"LayerDiffuseRGBATrainingDataset": {"resolution": SIZE, "codec": CODEC},
              "TrainLoraNode": TRAINING, "SaveLoRA": {"prefix": "loras/e2e_zimage"},
              "EmptySD3LatentImage": {"width": SIZE, "height": SIZE}, "KSampler": {"steps": 4},
              "CLIPTextEncode": {"text": CAPTION},
              "LayerDiffuseDecode": {"augmentations": "1", "codec": CODEC}}
    for node in graph.values():
        node["inputs"].update(common.get(node["class_type"], {}))
        node["inputs"].update(settings.get(node["class_type"], {}))
    return graph


@pytest.fixture(scope="module")
def trained_lora(zimage_server, tmp_path_factory) -> Path:
    """The LoRA the shipped training graph saves, moved into models/loras/ under the name the use graph loads."""
    server, base = zimage_server
    images = write_discs(tmp_path_factory.mktemp("rgba") / "discs")
    result = client.run(server.url, _shrunk("train_transparency_lora_zimage.json", LayerDiffuseRGBATrainingDataset={
        "image_folder": str(images)}), timeout=1800)
    assert result.ok, json.dumps(result.error, indent=1)
    report = json.dumps(result.outputs)
    assert f"{IMAGES} latents with" in report, report
    return http_outputs.install_saved_lora(base, "e2e_zimage_*.safetensors", "zimage_transparent.safetensors")


def _sampled_rgba(zimage_server, seed: int, strength: float) -> np.ndarray:
    server, base = zimage_server
    graph = _shrunk("zimage_transparent.json", KSampler={"seed": seed},
                    LoraLoaderModelOnly={"strength_model": strength})
    return http_outputs.saved_png(server.url, base / "output", graph, SIZE, timeout=900).astype(np.float32)


def _clear_fraction(alpha: np.ndarray) -> float:
    """The fraction of a picture's pixels that are clear (alpha under 0.1), wherever they lie."""
    return float((alpha < 0.1).mean())


def test_the_lora_makes_the_training_sets_alpha(zimage_server, trained_lora):
    """The set's pictures are 72% clear around an opaque disc. With the LoRA the samples' clear fraction comes
    nearer to that than the base model's, over seeds. Where the disc lies is not measured: the reduced model has
    positions only relative to its caption, which it learns last (after 150 steps the samples are clear
    surrounds with blobs)."""
    mask = shapes.disc_mask(SIZE)
    alphas = {strength: [_sampled_rgba(zimage_server, seed, strength)[..., 3] / 255 for seed in SEEDS]
              for strength in (1.0, 0.0)}
    clear = {strength: [round(_clear_fraction(alpha), 3) for alpha in alphas[strength]] for strength in alphas}
    errors = {strength: [round(float(np.abs(alpha - mask).mean()), 3) for alpha in alphas[strength]]
              for strength in alphas}
    report = (f"clear fraction (set: {_clear_fraction(mask):.3f}), LoRA {clear[1.0]} base {clear[0.0]}; "
              f"per-pixel alpha error, LoRA {errors[1.0]} base {errors[0.0]}")
    print(report)
    assert all(alpha.std() > 0.1 for alpha in alphas[1.0]), f"alpha must vary across each image: {report}"
    assert np.mean(clear[1.0]) > np.mean(clear[0.0]) + 0.05, report
    assert np.mean(clear[1.0]) < _clear_fraction(mask) + 0.1, f"nor clearer than the set: {report}"


def test_every_key_of_the_saved_lora_applies(zimage_server, trained_lora):
    server, base = zimage_server
    _sampled_rgba(zimage_server, 0, 1.0)  # the host's LoRA loader has run, whichever tests ran before
    http_outputs.assert_lora_fully_applied(base / "server.log", trained_lora,
                                           ("layers.0.", "noise_refiner.1.", "context_refiner.1."))


def _dataset_graph(folder: Path, model: list, vae: list) -> dict:
    return {"1": {"class_type": "UNETLoader", "inputs": {"unet_name": "z_image_turbo_bf16.safetensors",
                                                        "weight_dtype": "default"}},
            "2": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": fixtures.SD15_CHECKPOINT}},
            "3": {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}},
            "4": {"class_type": "LayerDiffuseRGBATrainingDataset", "inputs": {
                "image_folder": str(folder), "model": model, "vae": vae, "clip": ["2", 1], "codec": CODEC,
                "resolution": SIZE, "default_caption": ""}},
            "5": {"class_type": "PreviewAny", "inputs": {"source": ["4", 2]}}}


def test_bad_inputs_are_refused_clearly_and_the_server_keeps_serving(zimage_server, tmp_path):
    server, _ = zimage_server
    discs, opaque = write_discs(tmp_path / "discs"), tmp_path / "opaque"
    opaque.mkdir()
    Image.new("RGBA", (SIZE, SIZE), (200, 10, 10, 255)).save(opaque / "opaque.png")
    flux1_lora = {"1": {"class_type": "UNETLoader", "inputs": {"unet_name": "z_image_turbo_bf16.safetensors",
                                                              "weight_dtype": "default"}},
                  "2": {"class_type": "LayerDiffuseApply", "inputs": {"model": ["1", 0], "mode": "auto", "weight": 1.0,
                                                                      "start_percent": 0.0, "end_percent": 1.0}},
                  "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}}}
    cases = {
        "the FLUX.1 LoRA on Z-Image": (flux1_lora, r"samples FLUX.1's latents but is not FLUX.1, and the "
                                                   r"published transparency LoRA .* is for FLUX.1 only. Train one"),
        "no transparent image": (_dataset_graph(opaque, ["1", 0], ["3", 0]), r"holds no transparent image to train "
                                                                               r"on \(0 transparent images; skipped"),
        "a codec of another latent space": (_dataset_graph(discs, ["2", 0], ["2", 2]),
                                            rf"The codec {CODEC} was trained for FLUX.1 latents, but the connected "
                                            r"MODEL \(SD15\) samples SD1.5 latents"),
    }
    good = _dataset_graph(discs, ["1", 0], ["3", 0])
    for case, (graph, pattern) in cases.items():
        result = client.run(server.url, graph, timeout=600)
        assert not result.ok, case
        message = result.error["exception_message"]
        assert re.search(pattern, message), f"{case}: {message}"
        after = client.run(server.url, good, timeout=600)
        assert after.ok and f"{IMAGES} latents with" in json.dumps(after.outputs), (case, after.error)
