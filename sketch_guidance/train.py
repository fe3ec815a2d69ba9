"""Training the edge predictor, and its command line: `python -m sketch_guidance.train` (arguments: cli.py).

Each step draws a batch of images, noises each one's latent at a random point of the schedule,
reads the UNet's activations there (under the image's caption) and fits the predictor to the image's
VAE-encoded edge map, per pixel. The paper's recipe is the default (Adam, batch 16, 3000 steps).
Runs are deterministic under a seed and resumable: the state is saved every `save_every` steps
beside the output file and picked up again when the same run is started again.

Under torchrun (`torchrun --nproc_per_node N -m sketch_guidance.train ...`) the same command trains with
DistributedDataParallel: the batch of a step stays `batch_size` images in all, shared out among the
processes (schedule.py), so a run gives the same predictor and resumes with any number of processes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Protocol

import torch

from . import cli, distributed
from ._common import files
from .dataset import DatasetError, ImageFolder
from .features import Layer
from .predictor import EdgePredictor, PredictorInfo, save_predictor
from .schedule import BatchSchedule
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
    saved_at: int = 0  # the step of the last saved state
    step_seconds: list[float] = field(default_factory=list)  # steps trained by this call only

    def mean_loss(self, first: int, last: int) -> float:
        window = self.losses[first:last]
        return sum(window) / len(window)

    def images_per_second(self, batch_size: int) -> float:
        """Throughput of this call's steps, leaving out the first (it also encodes images) when there are more."""
        timed = self.step_seconds[1:] or self.step_seconds
        return batch_size * len(timed) / sum(timed)


ProgressCallback = Callable[[int, int, float], None]


class TrainingProcessError(RuntimeError):
    """A process of a run under torchrun stopped: it failed, or torchrun stopped it because another one did."""


def train_predictor(source: FeatureSource, dataset: ImageFolder, config: TrainConfig, output: str,
                    on_step: ProgressCallback | None = None,
                    processes: distributed.Processes = distributed.SINGLE) -> TrainReport:
    """Train, save the predictor to `output` (safetensors) and return the losses.

    Under torchrun every process calls this with the same arguments and its own `processes`: each computes
    its part of every global batch of `config.batch_size` images, and rank 0 alone writes files."""
    _check_config(config, processes)
    run = _Run.start(source, dataset, config, output, processes)
    try:
        for step in range(run.report.resumed_from, config.steps):
            run.train_step(step, on_step)
    except Exception as err:
        if not processes.launched:
            raise
        raise TrainingProcessError(_stop_message(run, err)) from err
    if processes.is_main:
        info = run.predictor.info
        trained = PredictorInfo(info.base, info.layer_set, info.layers, info.feature_channels,
                                trained_steps=config.steps)
        save_predictor(run.predictor.eval(), output, trained)
    return run.report


def _check_config(config: TrainConfig, processes: distributed.Processes) -> None:
    if config.steps < 1 or config.batch_size < 1 or config.save_every < 1:
        raise ValueError("steps, batch size and save interval must be at least 1")
    if not 0.0 < config.learning_rate < 1.0:
        raise ValueError(f"learning rate {config.learning_rate} is out of range (the paper's recipe uses 1e-4)")
    if config.batch_size < processes.world_size:
        raise ValueError(f"The batch of {config.batch_size} images per step is shared by the {processes.world_size} "
                         f"processes, so it must hold at least {processes.world_size} images: raise --batch-size "
                         "or start fewer processes.")


@dataclass
class _Run:
    source: FeatureSource
    dataset: ImageFolder
    config: TrainConfig
    processes: distributed.Processes
    predictor: EdgePredictor
    model: torch.nn.Module  # the predictor, under DistributedDataParallel when launched by torchrun
    optimizer: torch.optim.Optimizer
    state_path: str
    fingerprint: dict
    report: TrainReport
    schedule: BatchSchedule
    cache: dict[int, tuple[torch.Tensor, torch.Tensor, str]] = field(default_factory=dict)

    @classmethod
    def start(cls, source, dataset, config, output, processes) -> _Run:
        """A new predictor, or the saved run's (rank 0 reads the state and shares it with the others)."""
        info = PredictorInfo(source.base, source.layer_set, source.layers, source.feature_channels)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            predictor = EdgePredictor(info).to(source.device)
        if processes.launched:
            distributed.use_global_batch_norm(predictor)
        optimizer = torch.optim.Adam(predictor.parameters(), lr=config.learning_rate)
        # Not the process count: a run resumes with any number of processes.
        fingerprint = {"dataset": dataset.fingerprint(), "config": {**asdict(config), "steps": None},
                       "info": info.metadata()}
        state_path = output + ".train-state"
        saved = _saved_state(state_path, fingerprint) if processes.is_main else None
        report = _restore(distributed.from_main(saved, processes), predictor, optimizer)
        model = distributed.data_parallel(predictor, processes, source.device)
        return cls(source, dataset, config, processes, predictor, model, optimizer, state_path, fingerprint, report,
                   BatchSchedule(len(dataset), config.batch_size, config.seed))

    def train_step(self, step: int, on_step: ProgressCallback | None) -> None:
        distributed.kill_if_a_test_asks(self.processes, step)
        began = time.perf_counter()
        loss = self._fit(step)
        self.report.step_seconds.append(time.perf_counter() - began)
        self.report.losses.append(loss)
        if on_step is not None:
            on_step(step + 1, self.config.steps, loss)
        if (step + 1) % self.config.save_every == 0 or step + 1 == self.config.steps:
            if self.processes.is_main:
                _save_state(self.state_path, self.fingerprint, self.predictor, self.optimizer, self.report, step + 1)
            self.report.saved_at = step + 1

    def _fit(self, step: int) -> float:
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


def _stop_message(run: _Run, err: Exception) -> str:
    processes, report = run.processes, run.report
    if isinstance(err, distributed.StoppedByTorchrunError):
        cause = "torchrun stopped it because another process of the run failed; torchrun's summary names which"
    else:
        cause = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
    message = (f"Training process rank {processes.rank} of {processes.world_size} stopped in step "
               f"{len(report.losses) + 1} ({cause}). ")
    if report.saved_at:
        return message + (f"The state saved after step {report.saved_at} is kept in {run.state_path} (on rank 0's "
                          "machine): run the same command again, with any number of processes, to resume from it.")
    return message + (f"No state was saved yet (one is saved every {run.config.save_every} steps, --save-every): "
                      "running the same command again starts over.")


def _save_state(path, fingerprint, predictor, optimizer, report, step) -> None:
    with files.atomic_path(path) as tmp:
        torch.save({"fingerprint": fingerprint, "step": step, "predictor": predictor.state_dict(),
                    "optimizer": optimizer.state_dict(), "losses": list(report.losses)}, tmp)


def _saved_state(path: str, fingerprint: dict) -> dict | None:
    """The saved state of this same run, if there is one (another dataset or other settings: None, and the
    old state is overwritten at the next save)."""
    if not os.path.exists(path):
        return None
    saved = torch.load(path, map_location="cpu", weights_only=True)
    return saved if saved.get("fingerprint") == fingerprint else None


def _restore(saved: dict | None, predictor: EdgePredictor, optimizer: torch.optim.Optimizer) -> TrainReport:
    """The report of the run so far; the predictor and optimizer as they were saved."""
    if saved is None:
        return TrainReport()
    predictor.load_state_dict(saved["predictor"])
    optimizer.load_state_dict(saved["optimizer"])
    return TrainReport(list(saved["losses"]), resumed_from=saved["step"], saved_at=saved["step"])


def main(argv: list[str] | None = None) -> None:
    """The command line (arguments: cli.py): load the checkpoint through the host, train with a progress bar.
    Under torchrun every process runs it, and rank 0 alone prints and writes."""
    command = cli.parse_command(argv)
    processes = distributed.from_environment()
    cli.use_comfyui(command)
    try:
        _check_config(command.config, processes)
        if processes.launched:
            _join(processes, command)
        dataset = _dataset(command, processes)
    except ValueError as err:  # DatasetError among them
        raise SystemExit(str(err)) from err
    from . import host

    with torch.inference_mode(False):
        try:
            model, clip, vae = host.load_checkpoint(command.checkpoint)
            source = host.HostFeatureSource(model, vae, clip, command.layer_set)
            if processes.is_main:
                print(f"{source.base} checkpoint, {len(dataset)} images, {source.feature_channels} feature "
                      f"channels ({command.layer_set} layers) -> {command.output}"
                      + _processes_note(processes, command.config))
            report = _train_with_progress(source, dataset, command, processes)
        except TrainingProcessError as err:
            raise SystemExit(str(err)) from err
        except distributed.StoppedByTorchrunError as err:
            raise SystemExit(f"Training process rank {processes.rank}: torchrun stopped it before training "
                             "started, because another process of the run failed (see torchrun's summary).") from err
    distributed.stop()
    if processes.is_main:
        if report.resumed_from:
            print(f"resumed from step {report.resumed_from}")
        speed = f"; {report.images_per_second(command.config.batch_size):.2f} images/s" if report.step_seconds else ""
        print(f"final loss {report.losses[-1]:.4f}{speed}; saved {command.output}")


def _join(processes: distributed.Processes, command: cli.TrainCommand) -> None:
    """Join the torchrun run, on this process's GPU (or the CPU)."""
    if not command.cpu and torch.cuda.is_available():
        distributed.select_gpu(processes)  # before the host module picks its device
    from . import host

    distributed.start(processes, host.torch_device())


def _dataset(command: cli.TrainCommand, processes: distributed.Processes) -> ImageFolder:
    dataset = ImageFolder(command.images, command.resolution)
    differing = distributed.ranks_that_differ(dataset.contents(), processes)
    if differing:
        raise DatasetError(f"The training processes see different images: rank(s) {differing} do not have the "
                           f"{len(dataset)} images rank 0 has in {command.images}. Every machine of the run needs "
                           "the same image folder (same files, same sizes).")
    return dataset


def _processes_note(processes: distributed.Processes, config: TrainConfig) -> str:
    if not processes.launched:
        return ""
    fewest, most = config.batch_size // processes.world_size, -(-config.batch_size // processes.world_size)
    each = f"{fewest}" if fewest == most else f"{fewest} or {most}"
    return (f"\n{processes.world_size} processes ({distributed.backend()}): each step's {config.batch_size} images "
            f"are shared out, {each} per process")


def _train_with_progress(source: FeatureSource, dataset: ImageFolder, command: cli.TrainCommand,
                         processes: distributed.Processes) -> TrainReport:
    config = command.config
    if not processes.is_main:
        return train_predictor(source, dataset, config, command.output, processes=processes)
    from tqdm import tqdm

    with tqdm(total=config.steps, unit="step") as bar:
        def progress(step: int, total: int, loss: float) -> None:
            bar.n = step
            bar.set_postfix(loss=f"{loss:.4f}")
            bar.refresh()

        return train_predictor(source, dataset, config, command.output, progress, processes)


if __name__ == "__main__":
    main()
