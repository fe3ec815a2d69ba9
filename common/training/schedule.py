"""What each training step reads: its items (images) of the dataset, and for each one its own random draws
(the edge predictor's noise, point of the diffusion schedule and pixels, say).

The schedule belongs to the run, not to a process: the items come from one seeded permutation per epoch
(DistributedSampler's, taken whole), read as one stream cut into global batches; the random draws for an
item come from a generator keyed by (seed, step, position in the global batch). A process of a run under
torchrun takes every N-th position of each global batch, so N processes compute what one process would,
and a stopped run resumes with any number of processes on the same schedule.
"""

from __future__ import annotations

import hashlib

import torch
from torch.utils.data import DistributedSampler


class BatchSchedule:
    """The global batches of a run over `dataset_size` items, `batch_size` items per step."""

    def __init__(self, dataset_size: int, batch_size: int, seed: int) -> None:
        self.dataset_size, self.batch_size, self.seed = dataset_size, batch_size, seed
        self._orders: dict[int, list[int]] = {}

    def images(self, step: int) -> list[int]:
        """The dataset indices of step `step`'s global batch (0-based step), in batch order."""
        first = step * self.batch_size
        return [self._index_at(position) for position in range(first, first + self.batch_size)]

    def share(self, step: int, rank: int, world_size: int) -> list[tuple[int, int]]:
        """(position in the global batch, dataset index) of the items process `rank` of `world_size` reads."""
        batch = self.images(step)
        return [(position, batch[position]) for position in range(rank, self.batch_size, world_size)]

    def generator(self, step: int, position: int) -> torch.Generator:
        """The random draws for one item of one step: the same whichever process makes them."""
        digest = hashlib.sha256(f"{self.seed}/{step}/{position}".encode()).digest()
        return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))

    def _index_at(self, position: int) -> int:
        epoch, offset = divmod(position, self.dataset_size)
        if epoch not in self._orders:
            self._orders = {e: order for e, order in self._orders.items() if e >= epoch - 1}  # batches span 2 epochs
            self._orders[epoch] = _epoch_order(self.dataset_size, self.seed, epoch)
        return self._orders[epoch][offset]


def _epoch_order(size: int, seed: int, epoch: int) -> list[int]:
    # One replica: the whole permutation. Sharded by DistributedSampler itself, each epoch would be padded to
    # a multiple of the process count, and the schedule would change with it.
    sampler = DistributedSampler(range(size), num_replicas=1, rank=0, shuffle=True, seed=seed)
    sampler.set_epoch(epoch)
    return list(sampler)
