"""What identifies a run and its data: a saved state resumes only the run it was saved by, and every process of a
run under torchrun must see the same data.

Two digests of a dataset's files: `contents` (names and sizes: alike on every machine that holds a copy of
the folder) and the fingerprint (names, sizes and modification times: changes when a file is replaced).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict

from . import distributed


class DifferentDataError(ValueError):
    """The processes of a run under torchrun see different data."""


def files_digest(paths: Iterable[str], settings: str, with_times: bool) -> str:
    """A digest of `settings` (how the data is prepared: a resolution, say) and of each file's name and size, and
    its modification time when `with_times`."""
    digest = hashlib.sha256(settings.encode())
    for path in paths:
        stat = os.stat(path)
        modified = f":{stat.st_mtime_ns}" if with_times else ""
        digest.update(f"{os.path.basename(path)}:{stat.st_size}{modified}".encode())
    return digest.hexdigest()


def run_fingerprint(dataset: str, config, model: Mapping[str, str]) -> dict:
    """The run's identity: the dataset's fingerprint, the settings (a dataclass) other than the step count, so
    that a finished run continues when started again with more steps, and what the model is. Not the process
    count: a run resumes with any number of processes."""
    return {"dataset": dataset, "config": {**asdict(config), "steps": None}, "info": dict(model)}


def require_same_data(contents: str, processes: distributed.Processes, count: int, kind: str, folder: str) -> None:
    """Refuse to train when another process's `contents` digest differs from rank 0's (every process calls this)."""
    differing = distributed.ranks_that_differ(contents, processes)
    if differing:
        raise DifferentDataError(f"The training processes see different {kind}: rank(s) {differing} do not have "
                                 f"the {count} {kind} rank 0 has in {folder}. Every machine of the run needs the "
                                 "same files in that folder (same names, same sizes).")
