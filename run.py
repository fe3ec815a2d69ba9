#!/usr/bin/env python3
"""The pack's one entry point on a machine with only Python.

  python3 run.py                      set up a local ComfyUI (first time only) and start it with the pack
  python3 run.py WORKFLOW.json        ... or queue an API-format workflow headless and print the images
  python3 run.py --test               ... or run the whole test suite on the newest supported ComfyUI, then
                                      the host-dependent part on the older ones (devtools/hostenv.py HOSTS)
  python3 run.py --test PYTEST ARGS   ... or run pytest with these arguments on the newest host only
  --host VERSION                      use this supported ComfyUI instead (serve, queue, test)

Set-up goes into `.host/<version>/` in this checkout (see devtools/hostenv.py). Models come from the host's own
`models/` folder unless --models or --extra-model-paths points elsewhere; missing LayerDiffusion files
are downloaded by the nodes themselves.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

# The host venvs' pinned packages (numpy 2.4, torch 2.14) and the test suite (tomllib) need 3.11.
MINIMUM_PYTHON = (3, 11)
if sys.version_info < MINIMUM_PYTHON:
    sys.exit(f"run.py needs Python {'.'.join(map(str, MINIMUM_PYTHON))} or newer (this is "
             f"{sys.version.split()[0]}): start it with a newer python3, e.g. `python3.11 run.py`.")

sys.path.insert(0, str(Path(__file__).resolve().parent / "devtools"))

import hostenv  # noqa: E402
import hostimport  # noqa: E402
from host_server import ComfyServer  # noqa: E402

client = hostimport.queue_client()  # the pack's queue client (queue_workflow.py), without ComfyUI

MODEL_FOLDERS = ("checkpoints", "vae", "loras", "controlnet", "clip", "clip_vision", "embeddings",
                 "upscale_models", "layer_model", "edge_predictor")


def models_yaml(host: hostenv.Host, models_dir: Path) -> Path:
    """An extra_model_paths file that points every model kind at the user's models folder."""
    lines = ["user_models:", f"  base_path: {models_dir.resolve()}"]
    lines += [f"  {name}: {name}" for name in MODEL_FOLDERS]
    path = hostenv.host_dir(host) / "user_model_paths.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def host_args(host: hostenv.Host, options: argparse.Namespace) -> list[str]:
    args: list[str] = []
    if options.models:
        args += ["--extra-model-paths-config", str(models_yaml(host, Path(options.models)))]
    if options.extra_model_paths:
        args += ["--extra-model-paths-config", str(Path(options.extra_model_paths).resolve())]
    return args


def _stop_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so the ComfyUI child process is stopped too."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))


def new_server(host: hostenv.Host, options: argparse.Namespace, port: int | None) -> ComfyServer:
    return ComfyServer(hostenv.python_of(host), hostenv.comfy_dir(host), port=port,
                       cpu=not hostenv.host_has_cuda(host), extra_args=host_args(host, options),
                       env=hostenv.host_environment(host), log_path=hostenv.host_dir(host) / "server.log")


def serve(host: hostenv.Host, options: argparse.Namespace) -> int:
    _stop_on_sigterm()
    server = new_server(host, options, options.port)
    print(f"Starting ComfyUI {host.version} with the pack (log: {server.log_path}) ...", flush=True)
    server.start()
    print(f"ComfyUI is running at {server.url}  (Ctrl-C to stop)", flush=True)
    try:
        while server.alive():
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


def queue_workflow(host: hostenv.Host, options: argparse.Namespace) -> int:
    _stop_on_sigterm()
    try:
        graph = client.load_workflow(options.workflow)
    except (OSError, ValueError) as err:
        print(f"Cannot queue {options.workflow}: {err}", file=sys.stderr)
        return 2
    if options.server:
        return client.run_and_report(options.server, graph, options.out or "layer_sketch_output", options.timeout,
                                     remedy=_model_remedy(None))
    server = new_server(host, options, None)
    print(f"Starting a headless ComfyUI {host.version} ...", flush=True)
    with server:
        return client.run_and_report(server.url, graph, options.out, options.timeout,
                                     output_dir=hostenv.comfy_dir(host) / "output",
                                     remedy=_model_remedy(hostenv.comfy_dir(host) / "models"))


MODEL_OPTIONS = ("--models DIR (your ComfyUI models folder, holding checkpoints/, loras/, ...) "
                 "or --extra-model-paths FILE")


def _model_remedy(models_dir: Path | None) -> Callable[[str], str]:
    """Where a missing model file goes: the started server's models folder, or (--server) the user's ComfyUI."""
    if models_dir is None:
        return lambda folder: (f"put it into models/{folder}/ of that ComfyUI, or queue without --server and "
                               f"pass {MODEL_OPTIONS}")
    return lambda folder: f"pass {MODEL_OPTIONS}, or put the file into {models_dir / folder}/"


def marker_selection(host: hostenv.Host, selection: str | None = None) -> list[str]:
    """pytest's -m for one host: what its table entry runs under `run.py --test` (hostenv.CI_SELECTIONS), or
    with no selection the whole suite there (on an older host, what only the newest runs aside)."""
    if selection is None:
        return ["-m", "not older_editor" if host == hostenv.NEWEST else "not newest_host"]
    return ["-m", hostenv.CI_SELECTIONS[selection]]


def run_tests(host: hostenv.Host, pytest_args: list[str]) -> int:
    hostenv.ensure_host(host)
    hostenv.ensure_browser()
    print(f"[test] ComfyUI {host.version} (editor {host.frontend}): pytest {' '.join(pytest_args)}", flush=True)
    # -P keeps the checkout off sys.path: its nodes/ package would shadow the host's nodes.py.
    cmd = [str(hostenv.python_of(host)), "-P", "-m", "pytest", *pytest_args]
    return subprocess.run(cmd, cwd=hostenv.REPO, env=hostenv.host_environment(host)).returncode


def run_unit_tests_without_host() -> int:
    """tests/unit in a plain venv with only the pack's pure dependencies: the libraries need no ComfyUI."""
    python = hostenv.ensure_pure_env()
    print("[test] tests/unit without a host (plain venv)", flush=True)
    cmd = [str(python), "-P", "-m", "pytest", "-q", "tests/unit"]
    return subprocess.run(cmd, cwd=hostenv.REPO, env=hostenv.pure_environment()).returncode


def _run_host_stage(host: hostenv.Host) -> int:
    """One host's CI selection. On CI (CI=true) the host's environment is removed afterwards: a clean clone
    never reuses it, and three hosts' CUDA-enabled torch (about 7 GB each) at once can fill the disk."""
    # the slowest tests in the log: the stages share CI's time limit
    code = run_tests(host, [*marker_selection(host, host.ci), "--durations=25"])
    if os.environ.get("CI") == "true":
        hostenv.remove_host(host)
    return code


def run_all_tests() -> int:
    """The unit tests without a host, then each host in the table runs what its entry says (`Host.ci`):
    the newest all, older ones what depends on them. Every stage runs even when one fails; the time of
    each is printed at the end.
    """
    stages = [("tests/unit without a host", run_unit_tests_without_host)]
    stages += [(f"ComfyUI {host.version} ({host.ci})", lambda host=host: _run_host_stage(host))
               for host in hostenv.HOSTS if host.ci != "none"]
    results: list[tuple[str, int, float]] = []
    for name, run in stages:
        started = time.time()
        results.append((name, run(), time.time() - started))
        free = shutil.disk_usage(hostenv.REPO).free / 2**30
        print(f"[test] {name}: finished, {free:.1f} GiB free on disk", flush=True)
    for name, code, seconds in results:
        print(f"[test] {name}: {'passed' if code == 0 else 'FAILED'} in {seconds:.0f} s", flush=True)
    return next((code for _, code, _ in results if code), 0)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workflow", nargs="?", help="API-format workflow JSON to queue headless")
    parser.add_argument("--test", action="store_true", help="run the test suite (arguments after it go to pytest)")
    parser.add_argument("--host", choices=[host.version for host in hostenv.HOSTS],
                        help=f"ComfyUI version to use (default {hostenv.NEWEST.version}; "
                             "--test without it runs on every host in devtools/hostenv.py)")
    parser.add_argument("--models", help="your ComfyUI models folder (checkpoints/, layer_model/, ...)")
    parser.add_argument("--extra-model-paths", help="an extra_model_paths.yaml of yours")
    parser.add_argument("--port", type=int, default=8188, help="port for the server (default 8188)")
    parser.add_argument("--server", help="queue on this running server instead of starting one")
    parser.add_argument("--out", help="copy the images a queued workflow saves into this folder "
                                      "(default with --server: ./layer_sketch_output)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait for a workflow")
    pytest_args: list[str] = []
    if "--test" in argv:
        at = argv.index("--test")
        argv, pytest_args = argv[:at + 1], argv[at + 1:]
    options = parser.parse_args(argv)
    host = hostenv.host_named(options.host) if options.host else hostenv.HOST
    if options.test:
        if options.host or pytest_args:
            return run_tests(host, pytest_args or marker_selection(host))
        return run_all_tests()
    hostenv.ensure_host(host)
    if options.workflow:
        return queue_workflow(host, options)
    return serve(host, options)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
