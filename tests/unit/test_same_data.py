"""The refusal to train when the processes of a run see different data, with two real processes (gloo on the CPU).

Each process runs `require_same_data` with its own digest of the image folder, as the trainers' command lines
do before loading any model: every process must stop, rank 0's message naming the ranks that differ.
"""

from __future__ import annotations

import os

import torch.multiprocessing as mp
from support.data_agreement import check_digest


def _run(tmp_path, digests: list[str]) -> dict[int, str]:
    context = mp.get_context("spawn")
    results = context.SimpleQueue()
    mp.start_processes(check_digest, args=(str(tmp_path / "store"), digests, results), nprocs=len(digests),
                       start_method="spawn")
    found = dict(results.get() for _ in digests)
    return found


def test_processes_that_see_different_images_all_refuse_to_train(tmp_path):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    found = _run(tmp_path, ["digest-a", "digest-b"])
    assert set(found) == {0, 1}
    for message in found.values():
        assert message.startswith("The training processes see different images: rank(s) [1] do not have the 12 "
                                  "images rank 0 has in /data/shapes"), message


def test_processes_that_see_the_same_images_train(tmp_path):
    assert _run(tmp_path, ["digest-a", "digest-a"]) == {0: "trained", 1: "trained"}
