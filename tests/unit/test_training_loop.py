"""The training skeleton (common/training) driving the edge-predictor trainer in one process, on a stand-in for
the host (a fixed random projection of the latent as UNet features): saved state, resume, files of earlier
versions."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from comfyui_layer_sketch.common.training import state
from comfyui_layer_sketch.sketch_guidance.features import Layer
from comfyui_layer_sketch.sketch_guidance.predictor import load_predictor
from comfyui_layer_sketch.sketch_guidance.train import TrainConfig, train_predictor

CHANNELS, SIDE = 8, 32  # feature channels; image side (a 4x4 latent)


class StandInSource:
    base, layer_set, layers, feature_channels = "SD1.5", "paper", (Layer("input", 2),), CHANNELS
    device = torch.device("cpu")

    def __init__(self) -> None:
        self.projection = torch.randn(CHANNELS, 4, generator=torch.Generator().manual_seed(1))

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.avg_pool2d(pixels, 8).repeat(1, 2, 1, 1)[:, :4] * 2 - 1

    def features(self, latent, caption, fraction, noise):
        noisy = latent + fraction * noise
        return torch.tanh(torch.einsum("ck,bkhw->bchw", self.projection, noisy)), noise * fraction


class StandInImages:
    def __init__(self, count: int) -> None:
        generator = torch.Generator().manual_seed(2)
        self.images = [SimpleNamespace(pixels=torch.rand(1, 3, SIDE, SIDE, generator=generator),
                                       edges=(torch.rand(1, 1, SIDE, SIDE, generator=generator) > 0.8).float(),
                                       caption="") for _ in range(count)]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> SimpleNamespace:
        return self.images[index]

    def fingerprint(self) -> str:
        return "stand-in images"


def _train(output, steps: int):
    config = TrainConfig(steps=steps, batch_size=3, learning_rate=1e-3, pixels_per_image=0, save_every=1)
    return train_predictor(StandInSource(), StandInImages(5), config, str(output))


def _state_dicts_equal(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


def test_a_run_resumed_from_its_state_trains_the_predictor_of_an_unbroken_run(tmp_path):
    _train(tmp_path / "whole.safetensors", 3)
    _train(tmp_path / "resumed.safetensors", 2)
    report = _train(tmp_path / "resumed.safetensors", 3)
    assert report.resumed_from == 2 and len(report.losses) == 3 and len(report.step_seconds) == 1
    whole, resumed = (load_predictor(str(tmp_path / f"{name}.safetensors")) for name in ("whole", "resumed"))
    assert _state_dicts_equal(whole.state_dict(), resumed.state_dict())


def test_the_state_file_keeps_its_format(tmp_path):
    _train(tmp_path / "edges.safetensors", 2)
    saved = torch.load(state.path_for(str(tmp_path / "edges.safetensors")), weights_only=True)
    assert set(saved) == {"fingerprint", "step", "losses", "predictor", "optimizer"}
    fingerprint = saved["fingerprint"]
    assert set(fingerprint) == {"dataset", "config", "info"} and fingerprint["config"]["steps"] is None
    assert saved["step"] == 2 and len(saved["losses"]) == 2


@pytest.mark.parametrize(("base", "resumes"), [("SD15", True), ("SDXL", False)])
def test_a_state_saved_before_the_base_models_had_one_spelling_resumes(tmp_path, base, resumes):
    output = tmp_path / "edges.safetensors"
    _train(output, 2)
    path = state.path_for(str(output))
    saved = torch.load(path, weights_only=True)
    saved["fingerprint"]["info"]["base"] = base  # "SD15": as earlier versions wrote it; SDXL: another model
    torch.save(saved, path)
    assert _train(output, 3).resumed_from == (2 if resumes else 0)


def test_a_part_may_not_take_a_key_of_the_state_file(tmp_path):
    with pytest.raises(ValueError, match="step"):
        state.save(str(tmp_path / "x.train-state"), {}, 1, [0.5], {"step": {}})
