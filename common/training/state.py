"""The saved state of a run: one file beside the output (`<output>.train-state`), written by rank 0.

The file holds the run's fingerprint, the number of steps done, the loss of every step so far, and one
state dict per named part of the trainer (the edge predictor saves `predictor` and `optimizer`). It does not
depend on the process count, so a run resumes with any number of processes. A file of another run (other
data or settings) is ignored and overwritten at the next save.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

import torch

from .. import files

RESERVED = ("fingerprint", "step", "losses")  # the keys of the file that are not parts


def path_for(output: str) -> str:
    """Where the state of the run that writes `output` is kept."""
    return output + ".train-state"


def save(path: str, fingerprint: dict, step: int, losses: list[float], parts: Mapping[str, dict]) -> None:
    """Write the state after `step` steps atomically (a stopped write leaves the previous state)."""
    clashes = set(parts) & set(RESERVED)
    if clashes:
        raise ValueError(f"a trainer's part may not be named {sorted(clashes)}: the state file uses those keys")
    with files.atomic_path(path) as tmp:
        torch.save({"fingerprint": fingerprint, "step": step, "losses": list(losses), **parts}, tmp)


def load(path: str, fingerprint: dict, upgrade: Callable[[dict], dict] | None = None) -> dict | None:
    """The saved state of the run whose fingerprint is `fingerprint`, or None (no file, or another run's).
    `upgrade` rewrites a saved fingerprint in today's terms first, for files written by earlier versions."""
    if not os.path.exists(path):
        return None
    saved = torch.load(path, map_location="cpu", weights_only=True)
    written = saved.get("fingerprint")
    if upgrade is not None and isinstance(written, dict):
        written = upgrade(written)
    return saved if written == fingerprint else None


def differences(path: str, fingerprint: dict) -> list[str] | None:
    """How the run saved at `path` differs from the run `fingerprint` describes: None without a saved state,
    [] for the same run, else one line per setting that differs ("config.learning_rate: saved 0.001, now
    0.0001"), for trainers that refuse to overwrite another run's state."""
    if not os.path.exists(path):
        return None
    written = torch.load(path, map_location="cpu", weights_only=True).get("fingerprint")
    if not isinstance(written, dict):
        return ["the saved state has no description of its run"]
    return _differing(written, fingerprint, "")


def _differing(saved, now, where: str) -> list[str]:
    if isinstance(saved, dict) and isinstance(now, dict):
        return [line for key in sorted(set(saved) | set(now), key=str)
                for line in _differing(saved.get(key), now.get(key), f"{where}.{key}" if where else str(key))]
    return [] if saved == now else [f"{where}: saved {saved!r}, now {now!r}"]
