"""Queue API-format workflows on a ComfyUI server and collect what they wrote (standard library only)."""

from __future__ import annotations

import importlib.util
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path


class PromptRejectedError(RuntimeError):
    """The server refused the graph before running it (HTTP 400 with node errors)."""

    def __init__(self, body: dict) -> None:
        self.body = body
        error = body.get("error", {})
        details = [f"{node}: {e.get('message', '')} {e.get('details', '')}".strip()
                   for node, info in body.get("node_errors", {}).items() for e in info.get("errors", [])]
        super().__init__("; ".join([error.get("message", "prompt rejected")] + details))


@dataclass
class PromptResult:
    prompt_id: str
    status: str  # "success" or "error"
    outputs: dict = field(default_factory=dict)
    messages: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "success"

    @property
    def error(self) -> dict | None:
        """The host's execution_error payload (node_type, exception_type, exception_message, ...)."""
        for kind, data in self.messages:
            if kind == "execution_error":
                return data
        return None

    def images(self) -> list[dict]:
        return [image for output in self.outputs.values() for image in output.get("images", [])]


def _request(url: str, data: dict | None = None, timeout: float = 30.0) -> dict:
    body = None if data is None else json.dumps(data).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def get_json(server: str, path: str) -> dict:
    return _request(server.rstrip("/") + path)


def free_memory(server: str) -> None:
    """Ask the server to unload its models and drop its cached outputs (before another server needs the RAM)."""
    body = json.dumps({"unload_models": True, "free_memory": True}).encode()
    request = urllib.request.Request(server.rstrip("/") + "/free", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30):
        pass


def queue(server: str, graph: dict, client_id: str | None = None) -> str:
    try:
        answer = _request(server.rstrip("/") + "/prompt", {"prompt": graph, "client_id": client_id or uuid.uuid4().hex})
    except urllib.error.HTTPError as err:
        if err.code == 400:
            raise PromptRejectedError(json.loads(err.read() or b"{}")) from err
        raise
    if answer.get("node_errors"):
        # The host queues the outputs that did validate and runs them; the others are dropped silently.
        raise PromptRejectedError({"error": {"message": "some outputs of the workflow were refused (the rest "
                                                        f"run as prompt {answer['prompt_id']})"},
                                   "node_errors": answer["node_errors"]})
    return answer["prompt_id"]


def wait(server: str, prompt_id: str, timeout: float = 600.0, poll: float = 0.25, on_wait=None) -> PromptResult:
    deadline = time.time() + timeout
    while time.time() < deadline:
        history = get_json(server, f"/history/{prompt_id}")
        if prompt_id in history:
            entry = history[prompt_id]
            status = entry.get("status", {})
            return PromptResult(prompt_id, status.get("status_str", "unknown"), entry.get("outputs", {}),
                                status.get("messages", []))
        if on_wait is not None:
            on_wait()
        time.sleep(poll)
    raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout:.0f}s")


def run(server: str, graph: dict, timeout: float = 600.0, on_wait=None) -> PromptResult:
    return wait(server, queue(server, graph), timeout, on_wait=on_wait)


def _pack_client():
    """The pack's own headless client module (standard library only), loaded from this checkout."""
    path = Path(__file__).resolve().parents[1] / "headless.py"
    spec = importlib.util.spec_from_file_location("layer_sketch_headless", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_api_workflow(path: str | Path) -> dict:
    """An API-format graph ({node id: {class_type, inputs}}); UI-format files get a pointed error (ValueError)."""
    return _pack_client().load_workflow(str(path))


def output_paths(result: PromptResult, output_dir: Path) -> list[Path]:
    """Where the images of a finished prompt lie on the server's disk (type 'output' only)."""
    return [output_dir / image.get("subfolder", "") / image["filename"]
            for image in result.images() if image.get("type") == "output"]


def download_images(server: str, result: PromptResult, out_dir: Path) -> list[Path]:
    """Fetch a finished prompt's saved images over HTTP (/view) into `out_dir`; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for image in result.images():
        if image.get("type") != "output":
            continue
        query = urllib.parse.urlencode({k: image.get(k, "") for k in ("filename", "subfolder", "type")})
        target = out_dir / Path(image["filename"]).name
        tmp = target.with_name(f".{target.name}.part")
        with urllib.request.urlopen(f"{server.rstrip('/')}/view?{query}", timeout=60) as response:
            tmp.write_bytes(response.read())
        os.replace(tmp, target)
        paths.append(target)
    return paths
