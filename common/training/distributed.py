"""Training under torchrun: this process's place in the run, the process group, and the collectives a trainer
needs. PyTorch does the launching, rendezvous and failure detection; without torchrun's environment (RANK,
WORLD_SIZE) nothing here starts and training runs in one process.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Mapping
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


def join(processes: Processes, cpu: bool, device: Callable[[], torch.device]) -> None:
    """Join the run on this process's GPU, or on the CPU when `cpu` or without CUDA. `device` names the device
    the host will train on; it is asked after the GPU is chosen, before which the host must not pick one."""
    if not cpu and torch.cuda.is_available():
        select_gpu(processes)
    start(processes, device())


def sharing_note(processes: Processes, batch_size: int, unit: str = "images") -> str:
    """What the command prints about the processes: how each step's global batch is shared out."""
    if not processes.launched:
        return ""
    fewest, most = batch_size // processes.world_size, -(-batch_size // processes.world_size)
    each = f"{fewest}" if fewest == most else f"{fewest} or {most}"
    return (f"\n{processes.world_size} processes ({backend()}): each step's {batch_size} {unit} "
            f"are shared out, {each} per process")


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


def data_parallel(model: nn.Module, processes: Processes, device: torch.device) -> nn.Module:
    """`model` under DistributedDataParallel (gradients averaged over processes) when launched."""
    if not processes.launched:
        return model
    return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


def sum_over_processes(value: torch.Tensor, processes: Processes) -> torch.Tensor:
    if processes.launched:
        value = value.clone()
        dist.all_reduce(value)
    return value


def wait_for_all(processes: Processes) -> None:
    """Every process of the run reaches this point before any goes on (nothing without torchrun)."""
    if processes.launched:
        dist.barrier()


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
