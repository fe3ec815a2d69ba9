"""The step loop of a run: resume from the saved state, one global batch per step, progress, the state saved
every N steps by rank 0, and what a process of a run under torchrun says when it stops.

The trainer owns the model, the optimiser and what a step computes; the loop owns the order of things around
them, so every trainer saves, resumes and fails the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import distributed, state

ProgressCallback = Callable[[int, int, float], None]  # (steps done, steps in all, the last step's loss)
Step = Callable[[int], float]  # one optimiser step on the global batch of a step (0-based); returns its loss


class Stateful(Protocol):
    """A part of a trainer that is saved and restored: a module, an optimiser."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state_dict: dict) -> Any: ...


class TrainingProcessError(RuntimeError):
    """A process of a run under torchrun stopped: it failed, or torchrun stopped it because another one did."""


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


def check_run(steps: int, batch_size: int, save_every: int, processes: distributed.Processes) -> None:
    """Refuse settings no run can train with, before anything is loaded."""
    if steps < 1 or batch_size < 1 or save_every < 1:
        raise ValueError("steps, batch size and save interval must be at least 1")
    if batch_size < processes.world_size:
        raise ValueError(f"The batch of {batch_size} images per step is shared by the {processes.world_size} "
                         f"processes, so it must hold at least {processes.world_size} images: raise --batch-size "
                         "or start fewer processes.")


@dataclass
class Loop:
    """`steps` steps of a run whose state is saved at `state_path` every `save_every` steps, with `parts` (saved
    and restored under their names) and the run's `fingerprint` (fingerprint.run_fingerprint)."""

    steps: int
    save_every: int
    state_path: str
    fingerprint: dict
    parts: Mapping[str, Stateful]
    processes: distributed.Processes = distributed.SINGLE
    report: TrainReport = field(default_factory=TrainReport)

    def resume(self, upgrade: Callable[[dict], dict] | None = None) -> TrainReport:
        """Restore the parts from this run's saved state, if there is one (rank 0 reads it and shares it). Call it
        before wrapping a model in DistributedDataParallel; `upgrade`: see state.load."""
        saved = state.load(self.state_path, self.fingerprint, upgrade) if self.processes.is_main else None
        saved = distributed.from_main(saved, self.processes)
        if saved is not None:
            for name, part in self.parts.items():
                part.load_state_dict(saved[name])
            self.report = TrainReport(list(saved["losses"]), resumed_from=saved["step"], saved_at=saved["step"])
        return self.report

    def run(self, step: Step, on_step: ProgressCallback | None = None) -> TrainReport:
        """Train the steps left; under torchrun a failure becomes a TrainingProcessError saying where the state is."""
        try:
            for index in range(self.report.resumed_from, self.steps):
                self._one_step(step, index, on_step)
        except Exception as err:
            if not self.processes.launched:
                raise
            raise TrainingProcessError(self._stop_message(err)) from err
        return self.report

    def _one_step(self, step: Step, index: int, on_step: ProgressCallback | None) -> None:
        distributed.kill_if_a_test_asks(self.processes, index)
        began = time.perf_counter()
        loss = step(index)
        self.report.step_seconds.append(time.perf_counter() - began)
        self.report.losses.append(loss)
        if on_step is not None:
            on_step(index + 1, self.steps, loss)
        if (index + 1) % self.save_every == 0 or index + 1 == self.steps:
            if self.processes.is_main:
                parts = {name: part.state_dict() for name, part in self.parts.items()}
                state.save(self.state_path, self.fingerprint, index + 1, self.report.losses, parts)
            # The others wait for rank 0's save: a process failing in the next step, which makes torchrun stop
            # rank 0, cannot cut this save short and cost the run the steps it holds.
            distributed.wait_for_all(self.processes)
            self.report.saved_at = index + 1

    def _stop_message(self, err: Exception) -> str:
        processes, report = self.processes, self.report
        if isinstance(err, distributed.StoppedByTorchrunError):
            cause = "torchrun stopped it because another process of the run failed; torchrun's summary names which"
        else:
            cause = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
        message = (f"Training process rank {processes.rank} of {processes.world_size} stopped in step "
                   f"{len(report.losses) + 1} ({cause}). ")
        if report.saved_at:
            return message + (f"The state saved after step {report.saved_at} is kept in {self.state_path} (on rank "
                              "0's machine): run the same command again, with any number of processes, to resume "
                              "from it.")
        return message + (f"No state was saved yet (one is saved every {self.save_every} steps, --save-every): "
                          "running the same command again starts over.")
