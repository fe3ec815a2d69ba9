"""Starting the pack's training commands as a user does: one process, or torchrun on this machine (CPU, gloo)."""

from __future__ import annotations

import socket
import subprocess

import hostenv


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def run(arguments: list[str], **env: str) -> subprocess.CompletedProcess:
    """The host's Python with `arguments`, from the pack's folder, one thread per process: 2-process runs share
    the CI machine's 2 cores, and a single process with 2 threads is slow on a busy machine."""
    environment = {**hostenv.host_environment(), "OMP_NUM_THREADS": "1", **env}
    return subprocess.run([str(hostenv.venv_python()), *arguments], cwd=hostenv.REPO, capture_output=True, text=True,
                          timeout=600, env=environment)


def torchrun(arguments: list[str], processes: int, rendezvous: bool = False, **env: str) -> subprocess.CompletedProcess:
    """torchrun on one machine; `rendezvous`: in the several-machine form (--nnodes, c10d rendezvous endpoint)."""
    if rendezvous:
        launch = ["--nnodes", "1", "--rdzv_backend", "c10d", "--rdzv_endpoint", f"localhost:{free_port()}"]
    else:
        launch = ["--master_port", str(free_port())]
    return run(["-m", "torch.distributed.run", "--nproc_per_node", str(processes), *launch, *arguments], **env)


def succeeded(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result
