"""Sketch guidance in the real host, in-process: features, training, the guidance effect, composition, errors.

Models are made under `torch.inference_mode()`, as the host's loader nodes make them, so the guidance
path is tested against inference-tensor weights.
"""

from __future__ import annotations

import gc

import comfy.sample
import comfy.samplers
import comfy.supported_models
import pytest
import safetensors.torch
import torch
from comfyui_layer_sketch.common import families
from comfyui_layer_sketch.nodes import NODE_CLASS_MAPPINGS
from comfyui_layer_sketch.sketch_guidance import host as sketch_host
from comfyui_layer_sketch.sketch_guidance.dataset import DatasetError, ImageFolder
from comfyui_layer_sketch.sketch_guidance.edges import BlankSketchError
from comfyui_layer_sketch.sketch_guidance.features import LAYER_SETS, feature_channels
from comfyui_layer_sketch.sketch_guidance.guidance import edge_loss
from comfyui_layer_sketch.sketch_guidance.predictor import (
    COMMUNITY_LAYER_SETS,
    EdgePredictor,
    PredictorFileError,
    PredictorInfo,
    load_predictor,
)
from comfyui_layer_sketch.sketch_guidance.train import TrainConfig, train_predictor
from safetensors import safe_open
from support import layer_files, sketches
from support.host_models import (
    NARROW_SD15_UNET,
    NARROW_SDXL_UNET,
    SD15_FULL_UNET,
    SDXL_FULL_UNET,
    patcher_of,
    random_model,
    small_vae,
)

Apply = NODE_CLASS_MAPPINGS["SketchGuidanceApply"]
TRAIN_STEPS = sketches.TRAIN_STEPS


def test_layer_sets_read_the_channel_counts_of_the_real_sd15_layout():
    config = comfy.supported_models.SD15(dict(SD15_FULL_UNET))
    config.set_inference_dtype(torch.float32, None)
    with torch.device("meta"):
        unet = config.get_model({}, "", device=torch.device("meta")).diffusion_model
    counts = {name: feature_channels(unet, layers) for name, layers in LAYER_SETS.items()}
    assert counts == {"paper": 9280, "down_up": 7040, "down_mid_up": 9280}
    # the community files' input widths: features + 4 noise channels + 36 encoding channels
    assert {width - 40: counts[name] for width, name in COMMUNITY_LAYER_SETS.items()} == {7040: 7040, 9280: 9280}
    config = comfy.supported_models.SDXL(dict(SDXL_FULL_UNET))
    config.set_inference_dtype(torch.float32, None)
    with torch.device("meta"):
        sdxl = config.get_model({}, "", device=torch.device("meta")).diffusion_model
    assert feature_channels(sdxl, LAYER_SETS["paper"]) == 8320  # 320, 640, 1280, 3 x 1280, 1280, 640, 320


def test_layer_sets_on_the_narrow_unet(narrow):
    unet = narrow[0].model.diffusion_model
    assert {n: feature_channels(unet, layers) for n, layers in LAYER_SETS.items()} == \
        {"paper": 928, "down_up": 704, "down_mid_up": 928}


def test_training_reduces_the_loss(trained):
    path, report = trained
    assert len(report.losses) == TRAIN_STEPS
    first, last = report.mean_loss(0, 10), report.mean_loss(TRAIN_STEPS - 10, TRAIN_STEPS)
    assert last < first / 5, f"loss {first:.4f} -> {last:.4f}: expected at least a 5x reduction"
    predictor = load_predictor(path)
    assert predictor.info.trained_steps == TRAIN_STEPS and predictor.info.feature_channels == 928


def test_training_is_deterministic_and_resumes(tmp_path, narrow, clip):
    model, vae = narrow
    dataset = ImageFolder(str(sketches.write_image_folder(tmp_path / "images", 6, caption=None)), 64)
    config = TrainConfig(steps=8, batch_size=2, learning_rate=1e-3, pixels_per_image=16, save_every=3)
    with torch.inference_mode(False):
        source = sketch_host.HostFeatureSource(model, vae, clip, "paper")
        train_predictor(source, dataset, config, str(tmp_path / "straight.safetensors"))
        stopped = train_predictor(source, dataset, TrainConfig(**{**config.__dict__, "steps": 5}),
                                  str(tmp_path / "resumed.safetensors"))
        resumed = train_predictor(source, dataset, config, str(tmp_path / "resumed.safetensors"))
    assert len(stopped.losses) == 5 and resumed.resumed_from == 5 and len(resumed.losses) == 8
    straight, again = load_predictor(str(tmp_path / "straight.safetensors")), load_predictor(
        str(tmp_path / "resumed.safetensors"))
    for key, value in straight.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key


def _sample(model, positive, negative, seed: int, steps: int = 20, last_step: int | None = None) -> torch.Tensor:
    latent = torch.zeros(1, 4, 8, 8)
    noise = comfy.sample.prepare_noise(latent, seed)
    return comfy.sample.sample(model, noise, steps, 5.0, "euler", "normal", positive, negative, latent, seed=seed,
                               last_step=last_step, force_full_denoise=last_step is None, disable_pbar=True)


def _prompts(clip):
    with torch.inference_mode():
        return (clip.encode_from_tokens_scheduled(clip.tokenize("a shape")),
                clip.encode_from_tokens_scheduled(clip.tokenize("")))


def test_guidance_off_is_the_unpatched_model_and_guidance_leaves_the_base_alone(narrow, clip, trained):
    model, vae = narrow
    positive, negative = _prompts(clip)
    predictor = patcher_of(load_predictor(trained[0]))
    with torch.inference_mode():
        (off,) = Apply().apply(model, vae, predictor, sketches.drawn_sketch(1), 0.0, 0.5)
        (on,) = Apply().apply(model, vae, predictor, sketches.drawn_sketch(1), 1.6, 0.5)
        before = _sample(model, positive, negative, seed=3, steps=6)
        assert torch.equal(_sample(off, positive, negative, seed=3, steps=6), before)
        guided = _sample(on, positive, negative, seed=3, steps=6)
        assert torch.equal(_sample(model, positive, negative, seed=3, steps=6), before)
    assert (guided - before).abs().max() > 1e-3, "guidance must change the result"
    weight = model.model.diffusion_model.input_blocks[0][0].weight
    assert weight.is_inference(), "the host's weights are restored as they were after a guided step"


def _live_tensors() -> int:
    gc.collect()
    return sum(1 for obj in gc.get_objects() if isinstance(obj, torch.Tensor))


def test_a_guided_run_leaves_nothing_behind(narrow, clip, trained):
    """Every guided model call builds an autograd graph; none may outlive its run (a server would grow by the
    graphs of every guided prompt: 1.2 GB a run of 64 samples here when a saved tensor kept its graph)."""
    model, vae = narrow
    positive, negative = _prompts(clip)
    predictor = patcher_of(load_predictor(trained[0]))
    with torch.inference_mode():
        (guided,) = Apply().apply(model, vae, predictor, sketches.drawn_sketch(1), 1.6, 0.5)
        _sample(guided, positive, negative, seed=0, steps=6)  # what the first run caches stays
        before = _live_tensors()
        for seed in (1, 2):
            _sample(guided, positive, negative, seed=seed, steps=6)
    assert _live_tensors() <= before


def test_guidance_lowers_the_predicted_edge_loss_at_the_end_of_the_guided_range(narrow, clip, trained):
    """Sampled with and without guidance from the same seeds (40 Euler steps, guided for the first half), the
    predictor's loss against the sketch where guidance ends is lower with it: on a random-weight UNet the
    effect is modest (about 20% on average here), so the margin asked is 12% on average, most seeds lower."""
    model, vae = narrow
    positive, negative = _prompts(clip)
    predictor = load_predictor(trained[0])
    steps, seeds = 40, range(6)
    sampling = model.get_model_object("model_sampling")
    sigmas = comfy.samplers.calculate_sigmas(sampling, "normal", steps)
    end = int((sigmas >= sampling.percent_to_sigma(0.5)).sum())  # the first step after the guided range
    with torch.inference_mode():
        target = sketch_host.sketch_target(vae, model, sketches.drawn_sketch(7))
        guided_model = sketch_host.apply_guidance(model, patcher_of(predictor), target, 4.0, 0.5)
        losses = {}
        for name, sampled_model in (("plain", model), ("guided", guided_model)):
            for seed in seeds:
                x = model.model.latent_format.process_in(_sample(sampled_model, positive, negative, seed, steps,
                                                                 last_step=end))
                predicted = sketches.predicted_edges(model, predictor, positive, x, float(sigmas[end]))
                losses[name, seed] = float(edge_loss(predicted, target))
    lower = sum(losses["guided", s] < losses["plain", s] for s in seeds)
    ratio = sum(losses["guided", s] for s in seeds) / sum(losses["plain", s] for s in seeds)
    assert lower >= len(seeds) - 1, losses
    assert ratio < 0.88, f"guided/plain mean predicted-edge loss {ratio:.3f}: expected at least 12% lower"


def test_guidance_composes_with_layer_diffusion_attention_sharing(tmp_path, layer_folder, narrow, clip, trained):
    model, vae = narrow
    positive, negative = _prompts(clip)
    layer_files.save(layer_files.attention_sharing(model, 1, False),
                     layer_folder / "layer_sd15_transparent_attn.safetensors")
    with torch.inference_mode():
        (layered,) = NODE_CLASS_MAPPINGS["LayerDiffuseApply"]().apply(model, "auto", 1.0)
        predictor = patcher_of(load_predictor(trained[0]))
        (both,) = Apply().apply(layered, vae, predictor, sketches.drawn_sketch(2), 1.6, 0.5)
        only_layers = _sample(layered, positive, negative, seed=1, steps=4)
        combined = _sample(both, positive, negative, seed=1, steps=4)
    assert torch.isfinite(combined).all() and (combined - only_layers).abs().max() > 1e-3


def test_bad_inputs_are_refused_before_sampling(narrow, trained):
    model, vae = narrow
    predictor = load_predictor(trained[0])
    info = predictor.info
    for wrong, message in (
        (PredictorInfo("SDXL", info.layer_set, info.layers, info.feature_channels), "trained for SDXL"),
        (PredictorInfo(families.SD15, "paper", info.layers, 9280), "9280 feature channels"),
    ):
        with pytest.raises(PredictorFileError, match=message), torch.inference_mode():
            Apply().apply(model, vae, patcher_of(EdgePredictor(wrong)), sketches.drawn_sketch(1), 1.6, 0.5)
    with pytest.raises(BlankSketchError, match="blank"), torch.inference_mode():
        Apply().apply(model, vae, patcher_of(predictor), torch.ones(1, 64, 64, 3), 1.6, 0.5)
    with pytest.raises(ValueError, match="out of range"), torch.inference_mode():
        Apply().apply(model, vae, patcher_of(predictor), sketches.drawn_sketch(1), 11.0, 0.5)


def test_a_predictor_saved_with_the_legacy_sd15_spelling_still_fits_an_sd15_model(predictor_folder, narrow, trained):
    """Predictors saved before the family names were shared say "SD15": the Load node loads them and Apply
    takes them for an SD1.5 MODEL, as it takes one trained now (which carries the MODEL's own spelling)."""
    model, _ = narrow
    with safe_open(trained[0], framework="pt") as handle:
        metadata = handle.metadata()
    assert metadata["base"] == families.SD15 == sketch_host.base_of(model)
    old = predictor_folder / "old_spelling.safetensors"
    legacy = {**metadata, "base": "SD15"}
    safetensors.torch.save_file(safetensors.torch.load_file(trained[0]), str(old), metadata=legacy)
    load = NODE_CLASS_MAPPINGS["SketchGuidanceLoadPredictor"]
    assert old.name in load.INPUT_TYPES()["required"]["predictor_name"][0]
    (predictor,) = load().load(old.name)
    assert predictor.model.info.base == families.SD15
    sketch_host.check_fits(predictor.model, model)
    sketch_host.check_fits(load_predictor(trained[0]), model)


def test_sketch_of_another_shape_is_resized_and_said(narrow, clip, trained, caplog):
    model, vae = narrow
    positive, negative = _prompts(clip)
    wide = torch.nn.functional.interpolate(sketches.drawn_sketch(3).movedim(-1, 1), size=(64, 128)).movedim(1, -1)
    with torch.inference_mode():
        (guided,) = Apply().apply(model, vae, patcher_of(load_predictor(trained[0])), wide, 1.6, 0.5)
        result = _sample(guided, positive, negative, seed=0, steps=4)
    assert torch.isfinite(result).all()
    assert "does not match the image being generated" in caplog.text


def test_train_node_refuses_an_empty_folder_and_saves_into_the_model_folder(tmp_path, predictor_folder, narrow, clip):
    model, vae = narrow
    node = NODE_CLASS_MAPPINGS["SketchGuidanceTrainPredictor"]()
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="holds no images"):
        node.train(model, vae, clip, str(tmp_path / "empty"), 2, 2, 1e-3, "x", resolution=64)
    folder = sketches.write_image_folder(tmp_path / "images", 4)
    (folder / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="cannot be read.*broken.png"):
        node.train(model, vae, clip, str(folder), 2, 2, 1e-3, "x", resolution=64)
    (folder / "broken.png").unlink()
    with torch.inference_mode():
        predictor, report = node.train(model, vae, clip, str(folder), 3, 2, 1e-3, "from_node", resolution=64)
    assert (predictor_folder / "from_node.safetensors").is_file() and "3 steps" in report
    assert predictor.model.info.feature_channels == 928


def test_edge_map_node_normalises_both_polarities():
    node = NODE_CLASS_MAPPINGS["SketchToEdgeMap"]()
    dark_on_light = sketches.drawn_sketch(4)
    (a,) = node.edge_map(dark_on_light, "sketch")
    (b,) = node.edge_map(1.0 - dark_on_light, "sketch")
    assert a.shape == dark_on_light.shape
    torch.testing.assert_close(a, b)
    assert a.mean() < 0.3 and a.max() == 1.0, "white strokes on black"


def test_guidance_on_an_sdxl_shaped_unet(fixture_cache):
    """Channel counts follow the model: the paper's layers on an SDXL-layout UNet, guided sampling runs."""
    with torch.inference_mode():
        model, vae = random_model("SDXL", NARROW_SDXL_UNET), small_vae()
    unet = model.model.diffusion_model
    channels = feature_channels(unet, LAYER_SETS["paper"])
    assert channels == 8320 // 5  # SDXL's 320/640/1280 widths at a fifth
    predictor = patcher_of(EdgePredictor(PredictorInfo("SDXL", "paper", LAYER_SETS["paper"], channels)).eval())
    pooled = {"pooled_output": torch.zeros(1, 1280)}
    positive = [[torch.randn(1, 77, 2048, generator=torch.Generator().manual_seed(0)), pooled]]
    negative = [[torch.zeros(1, 77, 2048), pooled]]
    with torch.inference_mode():
        (guided,) = Apply().apply(model, vae, predictor, sketches.drawn_sketch(5), 1.6, 0.5)
        plain = _sample(model, positive, negative, seed=2, steps=4)
        steered = _sample(guided, positive, negative, seed=2, steps=4)
    assert torch.isfinite(steered).all() and (steered - plain).abs().max() > 1e-3
    with pytest.raises(PredictorFileError, match=r"trained for SDXL models, but the connected MODEL is SD1\.5"), \
            torch.inference_mode():
        Apply().apply(random_model("SD15", NARROW_SD15_UNET), vae, predictor, sketches.drawn_sketch(5), 1.6, 0.5)


def test_the_guided_pass_takes_its_gradient_through_attention_the_host_computes_in_place():
    """The host's sub-quadratic attention (CPUs, short memory: large batches) exponentiates in place when it
    works in chunks, which autograd refuses; the guided pass runs PyTorch's attention there instead."""
    import comfy.ldm.modules.attention as host_attention

    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 16, 32, generator=generator) for _ in range(3))
    q.requires_grad_(True)
    routed = sketch_host._differentiable_attention(host_attention.attention_sub_quad.__wrapped__, q, k, v, 4)
    assert torch.equal(routed, host_attention.attention_pytorch(q, k, v, 4)), "PyTorch's attention ran"
    routed.sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()
