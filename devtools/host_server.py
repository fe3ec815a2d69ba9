"""Start and stop a ComfyUI server process on 127.0.0.1 (standard library only)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerFailedError(RuntimeError):
    pass


class ComfyServer:
    """A ComfyUI `main.py` child process; use as a context manager or call start()/stop()."""

    def __init__(self, python: Path, comfy_dir: Path, *, port: int | None = None, cpu: bool = True,
                 extra_args: list[str] | None = None, env: dict[str, str] | None = None,
                 log_path: Path | None = None) -> None:
        self.python, self.comfy_dir = python, comfy_dir
        self.port = port or free_port()
        self.cpu, self.extra_args = cpu, list(extra_args or [])
        self.env = env or dict(os.environ)
        self.log_path = log_path or comfy_dir.parent / f"server-{self.port}.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        cmd = [str(self.python), "main.py", "--listen", "127.0.0.1", "--port", str(self.port),
               "--disable-auto-launch", "--disable-api-nodes"]
        if self.cpu:
            cmd.append("--cpu")
        return cmd + self.extra_args

    def start(self, timeout: float = 240.0) -> ComfyServer:
        log = open(self.log_path, "wb")
        self.process = subprocess.Popen(self.command(), cwd=self.comfy_dir, env=self.env,
                                        stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise ServerFailedError(f"ComfyUI exited with code {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/system_stats", timeout=2) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.3)
        self.stop()
        raise ServerFailedError(f"ComfyUI did not answer within {timeout:.0f}s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, chars: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def __enter__(self) -> ComfyServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
