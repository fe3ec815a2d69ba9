"""Queue an API-format workflow on a running ComfyUI, follow it, download what it made (standard library only).

    python -m comfyui_layer_sketch.queue_workflow WORKFLOW.json [--server URL] [--set NODE.INPUT=VALUE ...] [--out DIR]

Run it from ComfyUI/custom_nodes (or anywhere this folder is importable), with any Python 3.10+.
NODE is a node id, a node's title (`_meta.title`) or a class name used once in the graph; VALUE is
read as JSON when it parses (numbers, true/false, lists) and as text otherwise. Progress comes over the
server's websocket (by polling when that is not reachable); the exit status is 0 on success, 1 when
the workflow failed while running, 2 when the server refused it; the host's message is printed.

This is the pack's one ComfyUI client: `python3 run.py WORKFLOW.json` and the tests queue through it too
(`run` returns a PromptResult; `run_and_report` is the command line's queue, wait and print).

The module's name shadows no standard-library module: scripts started from the pack's folder (such as
`python -m sketch_guidance.train`) have the folder first on sys.path (tests/unit/test_entry_points.py).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import socket
import ssl
import struct
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .common import files

WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
POLL_S = 0.25  # between history requests while waiting for a prompt

# The models/ subfolder the host lists for each loader input (a refused value there is a missing file).
MODEL_INPUT_FOLDERS = {"ckpt_name": "checkpoints", "vae_name": "vae", "lora_name": "loras",
                       "control_net_name": "controlnet", "predictor_name": "edge_predictor"}

Progress = Callable[[str], None]
Remedy = Callable[[str], str]  # models/ subfolder -> where the user should put a missing file


class WorkflowError(ValueError):
    """Bad workflow file or --set argument (nothing was queued)."""


class RejectedError(Exception):
    """The server refused the workflow (or part of it) before running it; `body` is its answer."""

    def __init__(self, body: dict, note: str = "") -> None:
        self.body = body
        super().__init__("\n".join(line for line in [note, _node_errors(body)] if line))


@dataclass
class PromptResult:
    """A finished prompt, as the server's history records it."""

    prompt_id: str
    status: str  # the host's status_str: "success" or "error"
    outputs: dict = field(default_factory=dict)
    messages: list = field(default_factory=list)  # [kind, data] pairs: execution_start, execution_cached, ...

    @property
    def ok(self) -> bool:
        return self.status == "success"

    @property
    def error(self) -> dict | None:
        """The host's execution_error payload (node_type, node_id, exception_message, ...)."""
        return next((data for kind, data in self.messages if kind == "execution_error"), None)

    def failure(self) -> str:
        """Why the run failed, in the host's words."""
        if self.error is not None:
            return (f"{self.error.get('node_type', '?')} (node {self.error.get('node_id', '?')}): "
                    f"{str(self.error.get('exception_message', '')).strip()}")
        if any(kind == "execution_interrupted" for kind, _data in self.messages):
            return "the run was interrupted on the server"
        return f"the run ended with status {self.status!r}"

    def images(self) -> list[dict]:
        """Every image the outputs list: saved ones (type 'output') and previews ('temp')."""
        return [image for output in self.outputs.values() for image in output.get("images", [])]

    def saved_images(self) -> list[dict]:
        return [image for image in self.images() if image.get("type") == "output"]


# --- the workflow file and --set -----------------------------------------------------------------------------


def load_workflow(path: str | os.PathLike) -> dict:
    """An API-format graph ({node id: {class_type, inputs}}); a UI-format file gets a pointed WorkflowError."""
    with open(path, encoding="utf-8") as handle:
        graph = json.load(handle)
    if isinstance(graph, dict) and "nodes" in graph and "links" in graph:
        raise WorkflowError(f"{path} is a UI-format workflow (the graph editor's format). Queue its API-format copy "
                            "(this pack ships them in workflows/api/), or export one with Export (API).")
    if not isinstance(graph, dict) or not all(isinstance(n, dict) and "class_type" in n for n in graph.values()):
        raise WorkflowError(f"{path} is not an API-format workflow (a JSON object of nodes with class_type).")
    return graph


def _node_id(graph: dict, name: str) -> str:
    if name in graph:
        return name
    for key in ("title", "class_type"):
        matches = [i for i, n in graph.items() if (n.get("_meta", {}).get("title") if key == "title"
                                                   else n["class_type"]) == name]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise WorkflowError(f"'{name}' names {len(matches)} nodes ({', '.join(matches)}); use a node id.")
    raise WorkflowError(f"No node '{name}' in the workflow (ids: {', '.join(graph)}).")


def apply_settings(graph: dict, settings: list[str]) -> dict:
    """Apply NODE.INPUT=VALUE settings to a copy of the graph."""
    graph = json.loads(json.dumps(graph))
    for setting in settings:
        target, sep, raw = setting.partition("=")
        node_name, dot, field_name = target.rpartition(".")
        if not sep or not dot or not node_name or not field_name:
            raise WorkflowError(f"--set {setting!r}: write NODE.INPUT=VALUE, e.g. --set KSampler.steps=30")
        node = graph[_node_id(graph, node_name)]
        if field_name not in node["inputs"]:
            raise WorkflowError(f"--set {setting!r}: {node['class_type']} has no input '{field_name}' here "
                                f"(inputs: {', '.join(node['inputs'])}).")
        try:
            node["inputs"][field_name] = json.loads(raw)
        except json.JSONDecodeError:
            node["inputs"][field_name] = raw
    return graph


# --- HTTP ----------------------------------------------------------------------------------------------------


def _http_json(server: str, path: str, body: dict | None, timeout: float) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(server.rstrip("/") + path, data=data,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read() or b"{}")


def get_json(server: str, path: str, timeout: float = 30.0) -> dict:
    return _http_json(server, path, None, timeout)


def post_json(server: str, path: str, body: dict, timeout: float = 30.0) -> dict:
    return _http_json(server, path, body, timeout)


def _node_errors(answer: dict) -> str:
    lines = [answer.get("error", {}).get("message", "")] if isinstance(answer.get("error"), dict) else []
    for node, info in answer.get("node_errors", {}).items():
        for error in info.get("errors", []):
            lines.append(f"node {node} ({info.get('class_type', '?')}): {error.get('message', '')}: "
                         f"{error.get('details', '')}")
    return "\n".join(line for line in lines if line)


def submit(server: str, graph: dict, client_id: str | None = None) -> str:
    """Queue the graph and return its prompt id; RejectedError when the server refuses any of it."""
    try:
        answer = post_json(server, "/prompt", {"prompt": graph, "client_id": client_id or uuid.uuid4().hex})
    except urllib.error.HTTPError as err:
        if err.code == 400:
            raise RejectedError(json.loads(err.read() or b"{}")) from err
        raise
    if answer.get("node_errors"):  # the host runs the outputs that validated and drops the rest
        raise RejectedError(answer, f"some outputs were refused (the rest run as prompt {answer.get('prompt_id')})")
    return answer["prompt_id"]


def _missing_value_input(error: dict) -> str | None:
    """The input whose value is not among the server's choices, when that is what the node error says."""
    details = str(error.get("details", ""))
    if error.get("type") != "value_not_in_list" and " not in " not in details:
        return None
    return (error.get("extra_info") or {}).get("input_name") or details.split(":")[0].strip()


def _on_that_server(folder: str) -> str:
    return f"put it into models/{folder}/ of that ComfyUI"


def missing_value_hints(refusal: dict, remedy: Remedy = _on_that_server) -> list[str]:
    """A hint for each refused input whose value the server does not list: mostly a missing model file.

    remedy(folder) says where such a file goes (folder: the models/ subfolder, or '<folder>' when unknown).
    """
    hints: dict[str, None] = {}  # ordered, without repeats (one file can be refused in several nodes)
    for info in refusal.get("node_errors", {}).values():
        for error in info.get("errors", []):
            name = _missing_value_input(error)
            if name is None:
                continue
            problem = (f"{name} names a file the server does not have: " if name in MODEL_INPUT_FOLDERS else
                       f"{name} must be one of the values the server lists; if it names a model file, ")
            hints[f"Hint: {problem}{remedy(MODEL_INPUT_FOLDERS.get(name, '<folder>'))}."] = None
    return list(hints)


# --- websocket (RFC 6455, client side, text messages) -----------------------------------------------------


class _WebSocket:
    def __init__(self, sock: socket.socket, pending: bytes) -> None:
        self.sock, self.pending = sock, pending  # bytes of frames that arrived with the handshake

    def read_exact(self, count: int) -> bytes:
        data, self.pending = self.pending[:count], self.pending[count:]
        while len(data) < count:
            chunk = self.sock.recv(count - len(data))
            if not chunk:
                raise ConnectionError("the websocket closed")
            data += chunk
        return data

    def send_frame(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)  # clients must mask what they send
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)

    def close(self) -> None:
        self.sock.close()


def _ws_connect(server: str, client_id: str, timeout: float) -> _WebSocket:
    url = urllib.parse.urlparse(server)
    secure = url.scheme == "https"
    host, port = url.hostname or "127.0.0.1", url.port or (443 if secure else 80)
    sock = socket.create_connection((host, port), timeout=timeout)
    if secure:
        sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
    key = base64.b64encode(os.urandom(16)).decode()
    path = (url.path.rstrip("/") or "") + f"/ws?clientId={client_id}"
    sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    header = b""
    while b"\r\n\r\n" not in header:
        chunk = sock.recv(1024)
        if not chunk:
            sock.close()
            raise ConnectionError("the server closed the websocket handshake")
        header += chunk
    expected = base64.b64encode(hashlib.sha1((key + WEBSOCKET_GUID).encode()).digest()).decode()
    if b" 101 " not in header.split(b"\r\n", 1)[0] or expected.encode() not in header:
        sock.close()
        raise ConnectionError("the server did not accept the websocket")
    sock.settimeout(timeout)
    return _WebSocket(sock, header.split(b"\r\n\r\n", 1)[1])


def _ws_messages(ws: _WebSocket) -> Iterator[str]:
    """Text messages; binary frames (previews) are skipped, pings answered."""
    message, text = b"", False
    while True:
        first, second = ws.read_exact(2)
        opcode, length = first & 0x0F, second & 0x7F
        if length == 126:
            (length,) = struct.unpack(">H", ws.read_exact(2))
        elif length == 127:
            (length,) = struct.unpack(">Q", ws.read_exact(8))
        payload = ws.read_exact(length)
        if opcode == 0x8:
            return
        if opcode == 0x9:
            ws.send_frame(0xA, payload[:125])
            continue
        if opcode in (0x1, 0x2):
            message, text = payload, opcode == 0x1
        elif opcode == 0x0:
            message += payload
        if first & 0x80 and opcode in (0x0, 0x1, 0x2):
            if text:
                yield message.decode("utf-8", errors="replace")
            message = b""


def _class_of(graph: dict, node: object) -> str:
    return graph.get(str(node), {}).get("class_type", str(node))


def _show_event(event: dict, prompt_id: str, graph: dict, done: set[str], show: Progress) -> bool:
    """Show one server message about this prompt; True when it says the prompt has ended."""
    kind, data = event.get("type"), event.get("data") or {}
    if data.get("prompt_id") not in (None, prompt_id):
        return False
    if kind == "execution_cached":
        done.update(str(node) for node in data.get("nodes", []))
    elif kind == "executing" and data.get("node") is not None:
        done.add(str(data["node"]))
        show(f"[{len(done)}/{len(graph)}] {_class_of(graph, data['node'])}")
    elif kind == "progress":
        show(f"[{len(done)}/{len(graph)}] {_class_of(graph, data.get('node'))} {data.get('value')}/{data.get('max')}")
    return (kind in ("execution_success", "execution_error", "execution_interrupted")
            or (kind == "executing" and data.get("node") is None))


def follow(ws: _WebSocket, prompt_id: str, graph: dict, show: Progress) -> None:
    """Show the prompt's progress until it ends; the history says how (also when the websocket drops first)."""
    done: set[str] = set()
    try:
        for raw in _ws_messages(ws):
            if _show_event(json.loads(raw), prompt_id, graph, done, show):
                return
    except OSError:
        return


# --- results -------------------------------------------------------------------------------------------------


def history(server: str, prompt_id: str, timeout: float, show: Progress | None = None) -> PromptResult:
    """The finished prompt; polls its history until the host records it (TimeoutError after `timeout` s)."""
    started = time.time()
    while True:
        entry = get_json(server, f"/history/{prompt_id}").get(prompt_id)
        if entry is not None:  # the host records a prompt once it has ended
            status = entry.get("status") or {}
            return PromptResult(prompt_id, status.get("status_str", "unknown"), entry.get("outputs", {}),
                                status.get("messages", []))
        waited = time.time() - started
        if waited >= timeout:
            raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout:.0f} s")
        if show is not None:
            show(f"waiting for prompt {prompt_id} ... {waited:.0f} s")
        time.sleep(POLL_S)


def output_paths(result: PromptResult, output_dir: str | os.PathLike) -> list[Path]:
    """Where the saved images lie under the server's output folder `output_dir` ('' gives the server's names)."""
    return [Path(output_dir) / image.get("subfolder", "") / image["filename"] for image in result.saved_images()]


def download(server: str, result: PromptResult, out_dir: str | os.PathLike) -> list[Path]:
    """Fetch the saved images (not previews) over HTTP (/view) into out_dir; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    saved = []
    for image in result.saved_images():
        query = urllib.parse.urlencode({k: image.get(k, "") for k in ("filename", "subfolder", "type")})
        target = Path(out_dir) / os.path.basename(image["filename"])
        with urllib.request.urlopen(f"{server.rstrip('/')}/view?{query}", timeout=60) as response:
            data = response.read()
        files.write_bytes(target, data)
        saved.append(target)
    return saved


# --- queueing ------------------------------------------------------------------------------------------------


def _quiet(_text: str) -> None:
    pass


def run(server: str, graph: dict, timeout: float = 3600.0, show: Progress | None = None) -> PromptResult:
    """Queue `graph`, follow it to the end (over the websocket, else by polling) and return the finished prompt.

    RejectedError when the server refuses it; a run that fails on the server is a result that is not `ok`.
    """
    show = show or _quiet
    deadline = time.time() + timeout
    client_id = uuid.uuid4().hex
    try:
        ws = _ws_connect(server, client_id, timeout)
    except OSError:
        ws = None  # no websocket there (a proxy, an old server): the history is polled instead
    try:
        prompt_id = submit(server, graph, client_id)
        if ws is not None:
            follow(ws, prompt_id, graph, show)
    finally:
        if ws is not None:
            ws.close()
    return history(server, prompt_id, max(deadline - time.time(), 0.0), show)


def show_progress(text: str) -> None:
    """One status line on stderr, rewritten in place (stdout carries only the images' paths)."""
    sys.stderr.write(f"\r{text[:100]:<100}")
    sys.stderr.flush()


def _refused(err: RejectedError, remedy: Remedy) -> int:
    print(f"\nthe server refused the workflow:\n{err}", file=sys.stderr)
    for hint in missing_value_hints(err.body, remedy):
        print(hint, file=sys.stderr)
    return 2


def run_and_report(server: str, graph: dict, out: str | os.PathLike | None, timeout: float,
                   output_dir: str | os.PathLike = "", remedy: Remedy = _on_that_server) -> int:
    """Queue with progress on stderr, print the saved images' paths and return the exit status (0, 1 or 2).

    The images are downloaded into `out`; without it, their paths under `output_dir` (the server's output
    folder when it is on this machine) are printed. `remedy` says where missing model files go.
    """
    try:
        result = run(server, graph, timeout, show_progress)
        sys.stderr.write("\n")
        if not result.ok:
            print(f"the workflow failed: {result.failure()}", file=sys.stderr)
            return 1
        paths = download(server, result, out) if out else output_paths(result, output_dir)
    except RejectedError as err:
        return _refused(err, remedy)
    except TimeoutError as err:  # before OSError, which it is
        print(f"\nthe workflow did not finish: {err}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as err:
        print(f"\nerror: {err}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m comfyui_layer_sketch.queue_workflow",
                                     description="Queue an API-format workflow on a running ComfyUI.")
    parser.add_argument("workflow", help="API-format workflow JSON")
    parser.add_argument("--server", default="http://127.0.0.1:8188", help="ComfyUI address")
    parser.add_argument("--set", action="append", default=[], metavar="NODE.INPUT=VALUE",
                        help="change an input before queueing (repeatable)")
    parser.add_argument("--out", help="download the saved images into this folder")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for the result")
    args = parser.parse_args(argv)
    try:
        graph = apply_settings(load_workflow(args.workflow), args.set)
    except (OSError, ValueError) as err:  # WorkflowError and bad JSON are ValueErrors
        print(f"error: {err}", file=sys.stderr)
        return 2
    return run_and_report(args.server, graph, args.out, args.timeout)


if __name__ == "__main__":
    raise SystemExit(main())
