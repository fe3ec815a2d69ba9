"""A training process's data check, run in a child process by tests/unit/test_same_data.py.

It lives in `support` (on sys.path through pyproject.toml, which spawned children inherit) because a spawned
child imports its target by module name, and the test modules themselves are not importable under `python -P`.
"""

from __future__ import annotations

import torch.distributed as dist
from comfyui_layer_sketch.common.training import distributed, fingerprint


def check_digest(rank: int, store: str, digests: list[str], results) -> None:
    """Join a gloo group of len(digests) processes and report "trained" or the refusal this rank got."""
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=len(digests))
    processes = distributed.Processes(rank, len(digests), rank, len(digests), launched=True)
    try:
        fingerprint.require_same_data(digests[rank], processes, 12, "images", "/data/shapes")
        results.put((rank, "trained"))
    except fingerprint.DifferentDataError as err:
        results.put((rank, str(err)))
    finally:
        dist.destroy_process_group()
