"""What the command line of every trainer shares (`python -m <library>.train...`, plain or under torchrun): a
progress bar on rank 0 and exits that say why a process stopped. Nodes pass their own progress callback
(the host's progress bar) to Loop.run instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from . import distributed
from .loop import ProgressCallback, TrainingProcessError


@contextmanager
def progress_bar(total: int, processes: distributed.Processes) -> Iterator[ProgressCallback | None]:
    """A tqdm bar of `total` steps with the last loss, on rank 0 only (None elsewhere): the callback for Loop.run."""
    if not processes.is_main:
        yield None
        return
    from tqdm import tqdm

    with tqdm(total=total, unit="step") as bar:
        def progress(step: int, steps: int, loss: float) -> None:
            bar.n = step
            bar.set_postfix(loss=f"{loss:.4f}")
            bar.refresh()

        yield progress


@contextmanager
def exits_on_failure(processes: distributed.Processes) -> Iterator[None]:
    """A process of a run under torchrun that stops exits with its message rather than a traceback."""
    try:
        yield
    except TrainingProcessError as err:
        raise SystemExit(str(err)) from err
    except distributed.StoppedByTorchrunError as err:
        raise SystemExit(f"Training process rank {processes.rank}: torchrun stopped it before training started, "
                         "because another process of the run failed (see torchrun's summary).") from err
