"""Training the edge predictor, and its command line: `python -m sketch_guidance.train` (arguments: cli.py).

Each step draws a batch of images, noises each one's latent at a random point of the schedule,
reads the UNet's activations there (under the image's caption) and fits the predictor to the image's
VAE-encoded edge map, per pixel. The paper's recipe is the default (Adam, batch 16, 3000 steps).
Runs are deterministic under a seed and resumable: the state is saved every `save_every` steps
beside the output file and picked up again when the same run is started again.

Under torchrun (`torchrun --nproc_per_node N -m sketch_guidance.train ...`) the same command trains with
DistributedDataParallel: the batch of a step stays `batch_size` images in all, shared out among the
processes, so a run gives the same predictor and resumes with any number of processes.

The skeleton (torchrun, the run's schedule, saved state and resume, fingerprints, progress) is the pack's
common/training; what is here is the edge predictor's: its model, the features and pixels a step reads, the
loss, the file it writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Protocol

import torch

from . import cli
from ._common import training
from .dataset import ImageFolder
from .features import Layer
from .predictor import EdgePredictor, PredictorFileError, PredictorInfo, save_predictor
from .train_config import TrainConfig  # also imported from here (nodes, tests, bench)

distributed, loop = training.distributed, training.loop
TrainReport = loop.TrainReport  # what train_predictor returns


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


def train_predictor(source: FeatureSource, dataset: ImageFolder, config: TrainConfig, output: str,
                    on_step: loop.ProgressCallback | None = None,
                    processes: distributed.Processes = distributed.SINGLE) -> TrainReport:
    """Train, save the predictor to `output` (safetensors) and return the losses.

    Under torchrun every process calls this with the same arguments and its own `processes`: each computes
    its part of every global batch of `config.batch_size` images, and rank 0 alone writes files."""
    _check_config(config, processes)
    fit = _Fit.start(source, dataset, config, processes)
    fingerprint = training.fingerprint.run_fingerprint(dataset.fingerprint(), config, fit.predictor.info.metadata())
    run = loop.Loop(config.steps, config.save_every, training.state.path_for(output), fingerprint,
                    {"predictor": fit.predictor, "optimizer": fit.optimizer}, processes)
    run.resume(_today_s_fingerprint)
    fit.model = distributed.data_parallel(fit.predictor, processes, source.device)
    report = run.run(fit.step, on_step)
    if processes.is_main:
        save_predictor(fit.predictor.eval(), output, replace(fit.predictor.info, trained_steps=config.steps))
    return report


def _check_config(config: TrainConfig, processes: distributed.Processes) -> None:
    loop.check_run(config.steps, config.batch_size, config.save_every, processes)
    if not 0.0 < config.learning_rate < 1.0:
        raise ValueError(f"learning rate {config.learning_rate} is out of range (the paper's recipe uses 1e-4)")


def _today_s_fingerprint(saved: dict) -> dict:
    """A saved run's fingerprint with its predictor description in today's spelling: states saved before the
    base models had one spelling say "SD15", and resume all the same."""
    try:
        return {**saved, "info": PredictorInfo.from_metadata(saved["info"], "the saved state").metadata()}
    except (KeyError, TypeError, PredictorFileError):
        return saved


@dataclass
class _Fit:
    """The edge predictor's side of a run: its model and optimiser, and what one step computes."""

    source: FeatureSource
    dataset: ImageFolder
    config: TrainConfig
    processes: distributed.Processes
    predictor: EdgePredictor
    optimizer: torch.optim.Optimizer
    schedule: training.BatchSchedule
    model: torch.nn.Module | None = None  # the predictor, under DistributedDataParallel when launched by torchrun
    cache: dict[int, tuple[torch.Tensor, torch.Tensor, str]] = field(default_factory=dict)

    @classmethod
    def start(cls, source: FeatureSource, dataset: ImageFolder, config: TrainConfig,
              processes: distributed.Processes) -> _Fit:
        """A new predictor, the same in every process (seeded), and its optimiser."""
        info = PredictorInfo(source.base, source.layer_set, source.layers, source.feature_channels)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            predictor = EdgePredictor(info).to(source.device)
        # In one process too: one and N processes then normalise with the same arithmetic (batch_norm.py).
        training.batch_norm.use_global_batch_norm(predictor)
        optimizer = torch.optim.Adam(predictor.parameters(), lr=config.learning_rate)
        schedule = training.BatchSchedule(len(dataset), config.batch_size, config.seed)
        return cls(source, dataset, config, processes, predictor, optimizer, schedule)

    def step(self, step: int) -> float:
        """One optimiser step on this process's part of the global batch; returns the global batch's loss."""
        share = self.schedule.share(step, self.processes.rank, self.processes.world_size)
        parts = [self._sample(step, position, index) for position, index in share]
        features, noise_levels, targets = (torch.cat(bucket) for bucket in zip(*parts, strict=True))
        self.model.train()
        predicted = self.model(features, noise_levels)
        squared_error = torch.nn.functional.mse_loss(predicted, targets.to(predicted), reduction="sum")
        # The mean over the global batch: DDP averages the processes' gradients, hence the process count.
        elements = targets.numel() // len(share) * self.config.batch_size
        loss = squared_error * (self.processes.world_size / elements)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(distributed.sum_over_processes(squared_error.detach(), self.processes)) / elements

    def _sample(self, step: int, position: int, index: int) -> list[torch.Tensor]:
        """Features, noise level and target of one image of the global batch, at its random pixels."""
        source = self.source
        if index not in self.cache:
            image = self.dataset[index]
            edges_rgb = image.edges.expand(-1, 3, -1, -1)
            self.cache[index] = (source.encode(image.pixels).cpu(), source.encode(edges_rgb).cpu(), image.caption)
        latent, target, caption = self.cache[index]
        generator = self.schedule.generator(step, position)
        fraction = float(torch.rand(1, generator=generator))
        noise = torch.randn(latent.shape, generator=generator)
        features, noise_level = source.features(latent.to(source.device), caption, fraction,
                                                noise.to(source.device))
        return _pixel_subset([features, noise_level, target.to(source.device)], self.config.pixels_per_image,
                             generator)


def _pixel_subset(tensors: list[torch.Tensor], count: int, generator: torch.Generator) -> list[torch.Tensor]:
    """The same `count` random pixels of each [1,C,h,w] tensor, as [1,C,count,1] (all if count is 0)."""
    h, w = tensors[0].shape[-2:]
    if count <= 0 or count >= h * w:
        return tensors
    chosen = torch.randperm(h * w, generator=generator)[:count].to(tensors[0].device)
    return [t.flatten(2)[:, :, chosen, None] for t in tensors]


def main(argv: list[str] | None = None) -> None:
    """The command line (arguments: cli.py): load the checkpoint through the host, train with a progress bar.
    Under torchrun every process runs it, and rank 0 alone prints and writes."""
    command = cli.parse_command(argv)
    processes = distributed.from_environment()
    cli.use_comfyui(command)
    try:
        _check_config(command.config, processes)
        if processes.launched:
            distributed.join(processes, command.cpu, _host_device)
        dataset = _dataset(command, processes)
    except ValueError as err:  # DatasetError and DifferentDataError among them
        raise SystemExit(str(err)) from err
    from . import host

    config = command.config
    with torch.inference_mode(False), training.command.exits_on_failure(processes):
        model, clip, vae = host.load_checkpoint(command.checkpoint)
        source = host.HostFeatureSource(model, vae, clip, command.layer_set)
        if processes.is_main:
            print(f"{source.base} checkpoint, {len(dataset)} images, {source.feature_channels} feature "
                  f"channels ({command.layer_set} layers) -> {command.output}"
                  + distributed.sharing_note(processes, config.batch_size))
        with training.command.progress_bar(config.steps, processes) as progress:
            report = train_predictor(source, dataset, config, command.output, progress, processes)
    distributed.stop()
    if processes.is_main:
        if report.resumed_from:
            print(f"resumed from step {report.resumed_from}")
        speed = f"; {report.images_per_second(config.batch_size):.2f} images/s" if report.step_seconds else ""
        print(f"final loss {report.losses[-1]:.4f}{speed}; saved {command.output}")


def _host_device() -> torch.device:
    """The host's training device; imports the host module, which picks it, after the GPU is chosen."""
    from . import host

    return host.torch_device()


def _dataset(command: cli.TrainCommand, processes: distributed.Processes) -> ImageFolder:
    dataset = ImageFolder(command.images, command.resolution)
    training.fingerprint.require_same_data(dataset.contents(), processes, len(dataset), "images", command.images)
    return dataset


if __name__ == "__main__":
    main()
