#!/usr/bin/env python3
"""The pack's one entry point on a machine with only Python.

  python3 run.py                      set up a local ComfyUI (first time only) and start it with the pack
  python3 run.py WORKFLOW.json        ... or queue an API-format workflow headless and print the images
  python3 run.py --test [PYTEST ARGS] ... or run the whole test suite

Set-up goes into `.host/` in this checkout (see devtools/hostenv.py). Models come from the host's own
`models/` folder unless --models or --extra-model-paths points elsewhere; missing LayerDiffusion files
are downloaded by the nodes themselves.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "devtools"))

import host_client  # noqa: E402
import hostenv  # noqa: E402
from host_server import ComfyServer  # noqa: E402

MODEL_FOLDERS = ("checkpoints", "vae", "loras", "controlnet", "clip", "clip_vision", "embeddings",
                 "upscale_models", "layer_model", "edge_predictor")


def models_yaml(models_dir: Path) -> Path:
    """An extra_model_paths file that points every model kind at the user's models folder."""
    lines = ["user_models:", f"  base_path: {models_dir.resolve()}"]
    lines += [f"  {name}: {name}" for name in MODEL_FOLDERS]
    path = hostenv.HOST_DIR / "user_model_paths.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def host_args(options: argparse.Namespace) -> list[str]:
    args: list[str] = []
    if options.models:
        args += ["--extra-model-paths-config", str(models_yaml(Path(options.models)))]
    if options.extra_model_paths:
        args += ["--extra-model-paths-config", str(Path(options.extra_model_paths).resolve())]
    return args


def _stop_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so the ComfyUI child process is stopped too."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))


def serve(options: argparse.Namespace) -> int:
    _stop_on_sigterm()
    server = ComfyServer(hostenv.venv_python(), hostenv.COMFY_DIR, port=options.port,
                         cpu=not hostenv.host_has_cuda(), extra_args=host_args(options),
                         env=hostenv.host_environment(), log_path=hostenv.HOST_DIR / "server.log")
    print(f"Starting ComfyUI {hostenv.COMFYUI_VERSION} with the pack (log: {server.log_path}) ...", flush=True)
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


def queue_workflow(options: argparse.Namespace) -> int:
    _stop_on_sigterm()
    try:
        graph = host_client.load_api_workflow(options.workflow)
    except (OSError, ValueError) as err:
        print(f"Cannot queue {options.workflow}: {err}", file=sys.stderr)
        return 2
    if options.server:
        return _queue_on(options.server, graph, options, local_output=None)
    server = ComfyServer(hostenv.venv_python(), hostenv.COMFY_DIR, port=None, cpu=not hostenv.host_has_cuda(),
                         extra_args=host_args(options), env=hostenv.host_environment(),
                         log_path=hostenv.HOST_DIR / "server.log")
    print("Starting a headless ComfyUI ...", flush=True)
    with server:
        return _queue_on(server.url, graph, options, local_output=hostenv.COMFY_DIR / "output")


def _queue_on(url: str, graph: dict, options: argparse.Namespace, local_output: Path | None) -> int:
    started = time.time()
    try:
        result = host_client.run(url, graph, timeout=options.timeout,
                                 on_wait=lambda: print(f"\r  running ... {time.time() - started:5.0f}s",
                                                       end="", flush=True))
    except host_client.PromptRejectedError as err:
        print(f"The server refused the workflow: {err}", file=sys.stderr)
        return 2
    print()
    if not result.ok:
        error = result.error or {}
        print(f"The workflow failed in {error.get('node_type', '?')}: "
              f"{error.get('exception_message', result.status)}", file=sys.stderr)
        return 1
    if options.out or local_output is None:
        paths = host_client.download_images(url, result, Path(options.out or "layer_sketch_output"))
    else:
        paths = host_client.output_paths(result, local_output)
    for path in paths:
        print(path)
    return 0


def run_tests(pytest_args: list[str]) -> int:
    hostenv.ensure_browser()
    # -P keeps the checkout off sys.path: its nodes/ package would shadow the host's nodes.py.
    cmd = [str(hostenv.venv_python()), "-P", "-m", "pytest", *pytest_args]
    return subprocess.run(cmd, cwd=hostenv.REPO, env=hostenv.host_environment()).returncode


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workflow", nargs="?", help="API-format workflow JSON to queue headless")
    parser.add_argument("--test", action="store_true", help="run the test suite (arguments after it go to pytest)")
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
    hostenv.ensure_host()
    if options.test:
        return run_tests(pytest_args)
    if options.workflow:
        return queue_workflow(options)
    return serve(options)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
