"""What the benches measure with, written once: peak memory of a block of work."""

from __future__ import annotations

import threading
import time

import psutil
import torch


class PeakMemory:
    """Peak memory of the enclosed block above its start: the CUDA allocator's peak on a GPU, else the
    process's resident set size, sampled every 5 ms. `mib` after the block."""

    def __init__(self, device: torch.device | None = None) -> None:
        self.device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
        else:
            self.process = psutil.Process()
            self.start = self.peak = self.process.memory_info().rss
            self.running = True
            self.thread = threading.Thread(target=self._sample, daemon=True)
            self.thread.start()
        return self

    def _sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.005)

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self.running = False
            self.thread.join()

    @property
    def mib(self) -> float:
        return (self.peak - self.start) / 2**20
