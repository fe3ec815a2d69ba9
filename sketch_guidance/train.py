"""Training the edge predictor, and its command line: `python -m sketch_guidance.train` (arguments: cli.py).

Each step draws a batch of images, noises each one's latent at a random point of the schedule,
reads the UNet's activations there (under the image's caption) and fits the predictor to the image's
VAE-encoded edge map, per pixel. The paper's recipe is the default (Adam, batch 16, 3000 steps).
Runs are deterministic under a seed and resumable: the state is saved every `save_every` steps
beside the output file and picked up again when the same run is started again.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Protocol

import torch

from . import cli
from .dataset import DatasetError, ImageFolder
from .features import Layer
from .predictor import EdgePredictor, PredictorInfo, save_predictor
from .train_config import TrainConfig  # also imported from here (nodes, tests, bench)


class FeatureSource(Protocol):
    """The host side: encodes images and reads the UNet's activations."""

    base: str
    layer_set: str
    layers: tuple[Layer, ...]
    feature_channels: int
    device: torch.device

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """[1,3,H,W] in [0,1] -> model-space latent [1,4,H/8,W/8]."""

    def features(self, latent: torch.Tensor, caption: str, fraction: float,
                 noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Activations [1,C,h,w] and noise level [1,4,h,w] at `fraction` of the schedule (0: clean)."""


@dataclass
class TrainReport:
    losses: list[float] = field(default_factory=list)  # one per step, from the first step of the run
    resumed_from: int = 0

    def mean_loss(self, first: int, last: int) -> float:
        window = self.losses[first:last]
        return sum(window) / len(window)


ProgressCallback = Callable[[int, int, float], None]


def train_predictor(source: FeatureSource, dataset: ImageFolder, config: TrainConfig, output: str,
                    on_step: ProgressCallback | None = None) -> TrainReport:
    """Train, save the predictor to `output` (safetensors) and return the losses."""
    _check_config(config)
    info = PredictorInfo(source.base, source.layer_set, source.layers, source.feature_channels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        predictor = EdgePredictor(info).to(source.device)
    optimizer = torch.optim.Adam(predictor.parameters(), lr=config.learning_rate)
    generator = torch.Generator().manual_seed(config.seed)
    fingerprint = {"dataset": dataset.fingerprint(), "config": {**asdict(config), "steps": None},
                   "info": info.metadata()}
    state_path = output + ".train-state"
    report = TrainReport()
    start = _resume(state_path, fingerprint, predictor, optimizer, generator, report)
    cache: dict[int, tuple[torch.Tensor, torch.Tensor, str]] = {}
    for step in range(start, config.steps):
        loss = _train_step(source, dataset, config, predictor, optimizer, generator, cache)
        report.losses.append(loss)
        if on_step is not None:
            on_step(step + 1, config.steps, loss)
        if (step + 1) % config.save_every == 0 or step + 1 == config.steps:
            _save_state(state_path, fingerprint, predictor, optimizer, generator, report, step + 1)
    trained = PredictorInfo(info.base, info.layer_set, info.layers, info.feature_channels,
                            trained_steps=config.steps)
    save_predictor(predictor.eval(), output, trained)
    return report


def _check_config(config: TrainConfig) -> None:
    if config.steps < 1 or config.batch_size < 1 or config.save_every < 1:
        raise ValueError("steps, batch size and save interval must be at least 1")
    if not 0.0 < config.learning_rate < 1.0:
        raise ValueError(f"learning rate {config.learning_rate} is out of range (the paper's recipe uses 1e-4)")


def _sample(source: FeatureSource, dataset: ImageFolder, index: int, generator: torch.Generator,
            cache: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if index not in cache:
        image = dataset[index]
        edges_rgb = image.edges.expand(-1, 3, -1, -1)
        cache[index] = (source.encode(image.pixels).cpu(), source.encode(edges_rgb).cpu(), image.caption)
    latent, target, caption = cache[index]
    fraction = float(torch.rand(1, generator=generator))
    noise = torch.randn(latent.shape, generator=generator)
    features, noise_level = source.features(latent.to(source.device), caption, fraction, noise.to(source.device))
    return features, noise_level, target.to(source.device)


def _pixel_subset(tensors: list[torch.Tensor], count: int, generator: torch.Generator) -> list[torch.Tensor]:
    """The same `count` random pixels of each [1,C,h,w] tensor, as [1,C,count,1] (all if count is 0)."""
    h, w = tensors[0].shape[-2:]
    if count <= 0 or count >= h * w:
        return tensors
    chosen = torch.randperm(h * w, generator=generator)[:count].to(tensors[0].device)
    return [t.flatten(2)[:, :, chosen, None] for t in tensors]


def _train_step(source, dataset, config, predictor, optimizer, generator, cache) -> float:
    indices = torch.randint(len(dataset), (config.batch_size,), generator=generator).tolist()
    features, noise_levels, targets = [], [], []
    for index in indices:
        sample = _pixel_subset(list(_sample(source, dataset, index, generator, cache)), config.pixels_per_image,
                               generator)
        for bucket, value in zip((features, noise_levels, targets), sample, strict=True):
            bucket.append(value)
    predictor.train()
    predicted = predictor(torch.cat(features), torch.cat(noise_levels))
    loss = torch.nn.functional.mse_loss(predicted, torch.cat(targets).to(predicted))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def _save_state(path, fingerprint, predictor, optimizer, generator, report, step) -> None:
    tmp = path + ".part"
    torch.save({"fingerprint": fingerprint, "step": step, "predictor": predictor.state_dict(),
                "optimizer": optimizer.state_dict(), "generator": generator.get_state(),
                "losses": list(report.losses)}, tmp)
    os.replace(tmp, path)


def _resume(path, fingerprint, predictor, optimizer, generator, report) -> int:
    """The step to continue from: the saved run's, if one of the same run exists; otherwise 0."""
    if not os.path.exists(path):
        return 0
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if saved.get("fingerprint") != fingerprint:
        return 0  # another dataset or other settings: start afresh (the old state is overwritten)
    predictor.load_state_dict(saved["predictor"])
    optimizer.load_state_dict(saved["optimizer"])
    generator.set_state(saved["generator"])
    report.losses, report.resumed_from = list(saved["losses"]), saved["step"]
    return saved["step"]


def main(argv: list[str] | None = None) -> None:
    """The command line (arguments: cli.py): load the checkpoint through the host, train with a progress bar."""
    command = cli.parse_command(argv)
    cli.use_comfyui(command)
    from tqdm import tqdm

    from . import host

    try:
        dataset = ImageFolder(command.images, command.resolution)
    except DatasetError as err:
        raise SystemExit(str(err)) from err
    config = command.config
    with torch.inference_mode(False):
        model, clip, vae = host.load_checkpoint(command.checkpoint)
        source = host.HostFeatureSource(model, vae, clip, command.layer_set)
        print(f"{source.base} checkpoint, {len(dataset)} images, {source.feature_channels} feature channels "
              f"({command.layer_set} layers) -> {command.output}")
        with tqdm(total=config.steps, unit="step") as bar:
            def progress(step: int, total: int, loss: float) -> None:
                bar.n = step
                bar.set_postfix(loss=f"{loss:.4f}")
                bar.refresh()

            report = train_predictor(source, dataset, config, command.output, progress)
    if report.resumed_from:
        print(f"resumed from step {report.resumed_from}")
    print(f"final loss {report.losses[-1]:.4f}; saved {command.output}")


if __name__ == "__main__":
    main()
