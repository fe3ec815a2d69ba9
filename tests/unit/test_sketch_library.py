"""Pure-torch parts of sketch guidance: predictor files, community import, the guidance step, edges, dataset."""

from __future__ import annotations

import math

import pytest
import torch
from comfyui_layer_sketch.common import families
from comfyui_layer_sketch.sketch_guidance import edges
from comfyui_layer_sketch.sketch_guidance.dataset import DatasetError, ImageFolder
from comfyui_layer_sketch.sketch_guidance.features import LAYER_SETS, Layer
from comfyui_layer_sketch.sketch_guidance.guidance import guided_denoised, normal_tensor_views, snapshots_of_outputs
from comfyui_layer_sketch.sketch_guidance.predictor import (
    EdgePredictor,
    PredictorFileError,
    PredictorInfo,
    import_community_checkpoint,
    load_predictor,
    noise_encoding,
    save_predictor,
)
from PIL import Image
from safetensors import safe_open

INFO = PredictorInfo(families.SD15, "paper", LAYER_SETS["paper"], 24)


def _predictor(info: PredictorInfo = INFO, seed: int = 0) -> EdgePredictor:
    torch.manual_seed(seed)
    predictor = EdgePredictor(info)
    with torch.no_grad():  # running statistics as a trained predictor has them
        for layer in predictor.layers:
            if isinstance(layer, torch.nn.BatchNorm1d):
                layer.running_mean.uniform_(-0.5, 0.5)
                layer.running_var.uniform_(0.5, 2.0)
    return predictor.eval()


def test_layer_names_round_trip_and_bad_names_are_refused():
    assert [str(layer) for layer in LAYER_SETS["paper"]][:4] == ["input.2", "input.4", "input.8", "middle.0"]
    assert Layer.parse("output.11") == Layer("output", 11)
    with pytest.raises(ValueError, match="not a UNet layer name"):
        Layer.parse("down_blocks.1")


def test_noise_encoding_is_the_sine_ladder_grouped_by_frequency():
    noise = torch.tensor([0.5, -0.25, 1.0, 2.0]).reshape(1, 4, 1, 1)
    encoded = noise_encoding(noise, 9)
    assert encoded.shape == (1, 36, 1, 1)
    assert math.isclose(float(encoded[0, 4 * 3 + 1]), math.sin(2 * math.pi * -0.25 * 2**-3), abs_tol=1e-6)
    assert INFO.input_channels == 24 + 40


def test_predictor_is_per_pixel_and_saves_with_its_description(tmp_path):
    predictor = _predictor()
    features, noise = torch.randn(2, 24, 5, 7), torch.randn(2, 4, 5, 7)
    out = predictor(features, noise)
    assert out.shape == (2, 4, 5, 7)
    # per pixel: a pixel's prediction depends on that pixel's inputs only
    moved = features.clone()
    moved[0, :, 0, 0] += 1.0
    changed = (predictor(moved, noise) - out).abs().amax(dim=1)
    assert changed[0, 0, 0] > 0 and changed.sum() == changed[0, 0, 0]
    path = str(tmp_path / "p.safetensors")
    save_predictor(predictor, path)
    loaded = load_predictor(path)
    assert loaded.info == INFO and not list(tmp_path.glob("*.part"))
    torch.testing.assert_close(loaded(features, noise), out)


def test_a_predictor_saved_with_the_legacy_sd15_spelling_loads_as_sd15(tmp_path):
    """Files saved before the family names were shared say "SD15"; they keep loading as SD1.5 predictors,
    and a file saved now carries the one spelling that MODEL detection returns."""
    import safetensors.torch

    predictor = _predictor()
    old = tmp_path / "old.safetensors"
    legacy = {**INFO.metadata(), "base": "SD15"}
    safetensors.torch.save_file({k: v.contiguous() for k, v in predictor.state_dict().items()}, str(old),
                                metadata=legacy)
    loaded = load_predictor(str(old))
    assert loaded.info.base == families.SD15 == "SD1.5" and loaded.info == INFO
    features, noise = torch.randn(1, 24, 3, 3), torch.randn(1, 4, 3, 3)
    torch.testing.assert_close(loaded(features, noise), predictor(features, noise))
    save_predictor(loaded, str(tmp_path / "new.safetensors"))
    with safe_open(str(tmp_path / "new.safetensors"), framework="pt") as handle:
        assert handle.metadata()["base"] == families.SD15
    assert load_predictor(str(tmp_path / "new.safetensors")).info.base == families.SD15


def test_files_of_another_kind_are_refused_clearly(tmp_path):
    import safetensors.torch

    foreign = tmp_path / "lora.safetensors"
    safetensors.torch.save_file({"x": torch.zeros(2)}, str(foreign))
    with pytest.raises(PredictorFileError, match="not an edge predictor saved by this pack"):
        load_predictor(str(foreign))
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x00" * 20)
    with pytest.raises(PredictorFileError, match="not a readable safetensors file"):
        load_predictor(str(broken))


def _community_state(width: int, seed: int = 0) -> dict[str, torch.Tensor]:
    info = PredictorInfo(families.SD15, "x", (), width - 40)
    return {k: v.half() if v.is_floating_point() else v for k, v in _predictor(info, seed).state_dict().items()}


@pytest.mark.parametrize("width, wrap, layer_set", [
    (7080, True, "down_up"),  # SDv1.5-trained_LGP.pt: a checkpoint dict with model_state_dict
    (9320, False, "down_mid_up"),  # edge_predictor.pt: a raw state dict
])
def test_community_checkpoints_are_imported_with_their_layer_sets(tmp_path, width, wrap, layer_set):
    state = _community_state(width)
    path = tmp_path / "community.pt"
    torch.save({"model_state_dict": state, "loss": torch.tensor(0.1)} if wrap else state, path)
    predictor = import_community_checkpoint(str(path))
    assert predictor.info.layer_set == layer_set and predictor.info.feature_channels == width - 40
    assert predictor.info.layers == LAYER_SETS[layer_set]
    assert torch.equal(predictor.layers[0].weight, state["layers.0.weight"].float())


class _Payload:
    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_community_import_only_reads_weights(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"model_state_dict": _community_state(7080), "extra": _Payload()}, path)
    with pytest.raises(PredictorFileError, match="Only weights are loaded"):
        import_community_checkpoint(str(path))
    assert "pickled code ran" not in capsys.readouterr().out
    torch.save({"layers.0.weight": torch.zeros(512, 100)}, tmp_path / "other.pt")
    with pytest.raises(PredictorFileError, match="input width 100"):
        import_community_checkpoint(str(tmp_path / "other.pt"))


def test_guided_step_is_beta_times_the_euler_step_against_the_gradient():
    generator = torch.Generator().manual_seed(0)
    x, denoised, grad = (torch.randn(3, 4, 6, 6, generator=generator) for _ in range(3))
    grad[2] = 0.0  # a sample without conditional rows is left alone
    sigma, sigma_next, beta = 2.0, 1.5, 1.6

    def euler(d):
        return x + (sigma_next - sigma) / sigma * (x - d)

    plain, guided = euler(denoised), euler(guided_denoised(x, denoised, grad, beta))
    shift = (guided - plain).flatten(1)
    step = (x - plain).flatten(1).norm(dim=1)
    torch.testing.assert_close(shift.norm(dim=1)[:2], beta * step[:2])
    cosine = torch.nn.functional.cosine_similarity(shift[:2], -grad.flatten(1)[:2])
    torch.testing.assert_close(cosine, torch.ones(2))
    assert torch.equal(guided[2], plain[2])


def test_normal_views_let_gradients_through_inference_weights_without_copying():
    with torch.inference_mode():
        layer = torch.nn.Linear(4, 3)
        layer.register_buffer("scale", torch.ones(3))
    x = torch.randn(2, 4, requires_grad=True)
    with pytest.raises(RuntimeError, match="Inference tensors cannot be saved"):
        layer(x).sum().backward()
    pointer = layer.weight.data_ptr()
    with normal_tensor_views(layer) as swapped:
        assert swapped == 3 and layer.weight.data_ptr() == pointer and not layer.weight.is_inference()
        (grad,) = torch.autograd.grad((layer(x) * layer.scale).sum(), x)
    torch.testing.assert_close(grad, layer.weight.sum(0).expand(2, 4))
    assert layer.weight.is_inference() and layer.scale.is_inference(), "the originals are restored"


def test_snapshots_keep_the_backward_pass_valid_when_a_saved_output_is_changed_in_place():
    """As the host does with ControlNet residuals: a block output, saved by the next layer, is added to later."""
    block, after = torch.nn.Linear(3, 3), torch.nn.Tanh()

    def run(x: torch.Tensor) -> torch.Tensor:
        skip = block(x)
        y = (skip * skip).sum()  # saves `skip` for backward
        skip += 1.0  # the host's in-place residual
        return y + after(skip).sum()

    x = torch.randn(2, 3, requires_grad=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        run(x).backward()
    with snapshots_of_outputs([block]):
        (grad,) = torch.autograd.grad(run(x), x)
    skip = block(x).detach()
    expected = (2 * skip + (1 - torch.tanh(skip + 1.0) ** 2)) @ block.weight.detach()
    torch.testing.assert_close(grad, expected)


def _stroke_image(dark_on_light: bool) -> torch.Tensor:
    image = torch.ones(1, 3, 32, 32) * 0.9
    image[:, :, 10:12, 4:28] = 0.1
    image[:, :, 4:28, 20:21] = 0.3  # a lighter, thinner stroke
    return image if dark_on_light else 1.0 - image


def test_sketches_of_either_polarity_give_the_same_edge_map():
    a, b = edges.sketch_edges(_stroke_image(True)), edges.sketch_edges(_stroke_image(False))
    torch.testing.assert_close(a, b)
    assert float(a[0, 0, 10, 10]) == 1.0 and float(a[0, 0, 0, 0]) == 0.0
    assert 0.5 < float(a[0, 0, 20, 20]) < 1.0, "grey levels are kept, not thresholded away"
    strokes_on_transparency = torch.zeros(1, 4, 32, 32)
    strokes_on_transparency[:, 3, 10:12, 4:28] = 1.0
    assert float(edges.sketch_edges(strokes_on_transparency)[0, 0, 10, 10]) == 1.0


def test_blank_sketch_is_refused():
    with pytest.raises(edges.BlankSketchError, match="blank"):
        edges.sketch_edges(torch.full((1, 3, 16, 16), 0.97))


def test_photo_edges_lie_on_the_shape_boundary():
    image = torch.zeros(1, 3, 32, 32)
    image[:, :, 8:24, 8:24] = 1.0
    found = edges.photo_edges(image)[0, 0]
    assert found[8:24, 7:9].sum() > 8 and found[14:18, 14:18].sum() == 0 and found[:4, :4].sum() == 0


def test_image_folder_reads_captions_and_refuses_bad_folders(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        ImageFolder(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="holds no images"):
        ImageFolder(str(tmp_path / "empty"))
    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (48, 32), (200, 10, 10)).save(folder / "a.png")
    (folder / "a.txt").write_text(" a red card \n")
    Image.new("RGB", (16, 16)).save(folder / "b.jpg")
    dataset = ImageFolder(str(folder), 16)
    assert len(dataset) == 2 and dataset.caption(0) == "a red card" and dataset.caption(1) == ""
    item = dataset[0]
    assert item.pixels.shape == (1, 3, 16, 16) and item.edges.shape == (1, 1, 16, 16)
    (folder / "c.png").write_bytes(b"broken")
    with pytest.raises(DatasetError, match="cannot be read.*c.png"):
        ImageFolder(str(folder), 16)


def test_guidance_state_survives_a_deep_copy_of_the_model_options():
    """A MODEL clone may deep-copy its options: the post-CFG step must still read what the model call recorded."""
    import copy
    from functools import partial

    from comfyui_layer_sketch.sketch_guidance.guidance import GuidanceState

    state = GuidanceState(1.6, sigma_end=0.5)
    options = {"sampler_post_cfg_function": [partial(print, state)]}
    copied = copy.deepcopy(options)
    assert copied["sampler_post_cfg_function"][0].args[0] is state
