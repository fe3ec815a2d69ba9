"""Per-element lower median of a few same-shaped tensors, by a sorting network.

`torch.median(stack, dim=0)` reduces along a strided axis and, measured on a CPU, takes seconds
for eight 1024 px RGBA results; a sorting network is a few dozen element-wise min/max passes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

# Batcher's odd-even merge sort networks: after these compare-exchanges the list is sorted.
SORTING_NETWORKS: dict[int, tuple[tuple[int, int], ...]] = {
    1: (),
    2: ((0, 1),),
    4: ((0, 1), (2, 3), (0, 2), (1, 3), (1, 2)),
    8: ((0, 1), (2, 3), (4, 5), (6, 7), (0, 2), (1, 3), (4, 6), (5, 7), (1, 2), (5, 6),
        (0, 4), (1, 5), (2, 6), (3, 7), (2, 4), (3, 5), (1, 2), (3, 4), (5, 6)),
}


def lower_median(values: Sequence[torch.Tensor]) -> torch.Tensor:
    """The element-wise lower median (as `torch.median` defines it: element (n-1)//2 in sorted order)."""
    count = len(values)
    if count not in SORTING_NETWORKS:
        raise ValueError(f"lower_median takes {sorted(SORTING_NETWORKS)} tensors, got {count}")
    ordered = list(values)
    for i, j in SORTING_NETWORKS[count]:
        ordered[i], ordered[j] = torch.minimum(ordered[i], ordered[j]), torch.maximum(ordered[i], ordered[j])
    return ordered[(count - 1) // 2]
