"""Training under torchrun: the process group, BatchNorm over the global batch, and the collectives the
trainer needs. PyTorch does the launching, rendezvous and failure detection; without torchrun's
environment (RANK, WORLD_SIZE) nothing here starts and training runs in one process as before.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

BACKENDS = {"cuda": "nccl", "cpu": "gloo"}
# Tests only: "RANK:STEP" makes that process kill itself (SIGKILL) when it starts step STEP + 1.
KILL_FOR_TESTS = "LAYER_SKETCH_TEST_KILL_RANK"


@dataclass(frozen=True)
class Processes:
    """This process's place in the run; one process (rank 0 of 1) when not started by torchrun."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    launched: bool = False  # started by torchrun: the process group is (to be) initialised

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and reports progress."""
        return self.rank == 0


SINGLE = Processes()


class StoppedByTorchrunError(Exception):
    """torchrun stopped this process (SIGTERM), which it does to all processes when one of them fails."""


def from_environment(env: Mapping[str, str] = os.environ) -> Processes:
    """The run as torchrun describes it in the environment; SINGLE without torchrun."""
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return SINGLE
    world_size = int(env["WORLD_SIZE"])
    local_world_size = int(env.get("LOCAL_WORLD_SIZE", world_size))
    return Processes(int(env["RANK"]), world_size, int(env.get("LOCAL_RANK", 0)), local_world_size, True)


def select_gpu(processes: Processes) -> None:
    """Put this process on its machine's GPU number LOCAL_RANK; call before the host picks its device."""
    count = torch.cuda.device_count()
    if processes.local_world_size > count:
        raise ValueError(f"{processes.local_world_size} training processes on this machine but {count} GPU(s): "
                         f"start at most {count} per machine (torchrun --nproc_per_node {count}), or add --cpu.")
    torch.cuda.set_device(processes.local_rank)


def start(processes: Processes, device: torch.device) -> None:
    """Join the run's process group: nccl for CUDA devices, gloo for the CPU."""
    backend = BACKENDS.get(device.type)
    if backend is None:
        raise ValueError(f"Training under torchrun runs on CUDA GPUs (nccl) or on the CPU (gloo), but this "
                         f"process would train on {device}: add --cpu, or train in one process without torchrun.")
    if device.type == "cpu":  # torchrun sets OMP_NUM_THREADS=1; share the machine's cores out instead
        torch.set_num_threads(cpu_threads(processes))
    dist.init_process_group(backend)
    # torchrun stops the others with SIGTERM when one process fails: an exception lets them say where the
    # saved state is, where the default action would end them silently.
    signal.signal(signal.SIGTERM, _raise_stopped)


def backend() -> str:
    return str(dist.get_backend())


def stop() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def cpu_threads(processes: Processes, env: Mapping[str, str] = os.environ) -> int:
    """OMP_NUM_THREADS when the user chose it; otherwise this process's share of the CPUs it may run on.
    (torchrun sets OMP_NUM_THREADS=1 when it starts several processes and the user set nothing.)"""
    chosen = env.get("OMP_NUM_THREADS", "")
    if chosen.isdigit() and int(chosen) > 0 and not (chosen == "1" and processes.local_world_size > 1):
        return int(chosen)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // processes.local_world_size)


def _raise_stopped(signum, frame) -> None:
    raise StoppedByTorchrunError("torchrun stopped this process")


def kill_if_a_test_asks(processes: Processes, step: int) -> None:
    if os.environ.get(KILL_FOR_TESTS) == f"{processes.rank}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)


def data_parallel(predictor: nn.Module, processes: Processes, device: torch.device) -> nn.Module:
    """The predictor under DistributedDataParallel (gradients averaged over processes) when launched."""
    if not processes.launched:
        return predictor
    return DistributedDataParallel(predictor, device_ids=[device] if device.type == "cuda" else None)


def sum_over_processes(value: torch.Tensor, processes: Processes) -> torch.Tensor:
    if processes.launched:
        value = value.clone()
        dist.all_reduce(value)
    return value


def from_main(value, processes: Processes):
    """Rank 0's `value` in every process (any picklable object): only rank 0 reads files."""
    if not processes.launched:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def ranks_that_differ(value, processes: Processes) -> list[int]:
    """The ranks whose `value` differs from rank 0's (none when not launched)."""
    if not processes.launched:
        return []
    values = [None] * processes.world_size
    dist.all_gather_object(values, value)
    return [rank for rank, other in enumerate(values) if other != values[0]]


class GlobalBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d that trains with the statistics of the global batch (all processes' rows together), so
    that N processes normalise as one process with the whole batch would. PyTorch's SyncBatchNorm does
    this on CUDA only; this one works with any backend, gloo on the CPU included."""

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(rows)
        count = rows.new_tensor(float(rows.shape[0]))
        dist.all_reduce(count)
        mean = _SumOverProcesses.apply(rows.sum(0)) / count
        centred = rows - mean
        variance = _SumOverProcesses.apply((centred * centred).sum(0)) / count
        self._track(mean.detach(), variance.detach() * count / (count - 1))
        return centred * torch.rsqrt(variance + self.eps) * self.weight + self.bias

    @torch.no_grad()
    def _track(self, mean: torch.Tensor, unbiased_variance: torch.Tensor) -> None:
        self.num_batches_tracked += 1
        factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        self.running_mean.lerp_(mean, factor)
        self.running_var.lerp_(unbiased_variance, factor)


class _SumOverProcesses(torch.autograd.Function):
    """The sum of a tensor over all processes, with its gradient summed likewise: each process's rows then
    get their share of the loss gradients of every process's rows that their statistics touched."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone()
        dist.all_reduce(total)
        return total


def use_global_batch_norm(module: nn.Module) -> None:
    """Swap the BatchNorm1d layers of `module` (affine, tracking running statistics, as the predictor's are)
    for GlobalBatchNorm1d, keeping the same parameters and buffers: the state-dict keys stay those of a plain
    predictor, and an optimizer made before the swap still holds the parameters."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm1d:
            replacement = GlobalBatchNorm1d(child.num_features, child.eps, child.momentum)
            replacement.weight, replacement.bias = child.weight, child.bias
            for buffer in ("running_mean", "running_var", "num_batches_tracked"):
                setattr(replacement, buffer, getattr(child, buffer))
            replacement.train(child.training)
            setattr(module, name, replacement)
        else:
            use_global_batch_norm(child)
