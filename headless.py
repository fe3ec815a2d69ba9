"""The headless client behind `python -m <pack>.queue_workflow`: queue, follow over the websocket, download.

Standard library only, so it runs from any Python next to (or far from) the ComfyUI server.
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

WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class WorkflowError(ValueError):
    """Bad workflow file or --set argument (nothing was queued)."""


class RejectedError(Exception):
    """The server refused the workflow before running it."""


class FailedError(Exception):
    """The workflow failed while running; the message is the host's."""


def load_workflow(path: str) -> dict:
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
        node_name, dot, field = target.rpartition(".")
        if not sep or not dot or not node_name or not field:
            raise WorkflowError(f"--set {setting!r}: write NODE.INPUT=VALUE, e.g. --set KSampler.steps=30")
        node = graph[_node_id(graph, node_name)]
        if field not in node["inputs"]:
            raise WorkflowError(f"--set {setting!r}: {node['class_type']} has no input '{field}' here "
                                f"(inputs: {', '.join(node['inputs'])}).")
        try:
            node["inputs"][field] = json.loads(raw)
        except json.JSONDecodeError:
            node["inputs"][field] = raw
    return graph


def _http_json(server: str, path: str, body: dict | None = None, timeout: float = 30.0) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(server.rstrip("/") + path, data=data,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read() or b"{}")


def _node_errors(answer: dict) -> str:
    lines = [answer.get("error", {}).get("message", "")] if isinstance(answer.get("error"), dict) else []
    for node, info in answer.get("node_errors", {}).items():
        for error in info.get("errors", []):
            lines.append(f"node {node} ({info.get('class_type', '?')}): {error.get('message', '')}: "
                         f"{error.get('details', '')}")
    return "\n".join(line for line in lines if line)


def submit(server: str, graph: dict, client_id: str) -> str:
    try:
        answer = _http_json(server, "/prompt", {"prompt": graph, "client_id": client_id})
    except urllib.error.HTTPError as err:
        if err.code == 400:
            raise RejectedError(_node_errors(json.loads(err.read() or b"{}"))) from err
        raise
    if answer.get("node_errors"):  # the host runs the outputs that validated and drops the rest
        raise RejectedError(_node_errors(answer))
    return answer["prompt_id"]


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
            raise ConnectionError("the server closed the websocket handshake")
        header += chunk
    expected = base64.b64encode(hashlib.sha1((key + WEBSOCKET_GUID).encode()).digest()).decode()
    if b" 101 " not in header.split(b"\r\n", 1)[0] or expected.encode() not in header:
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


Progress = Callable[[str], None]


def follow(ws: _WebSocket, prompt_id: str, graph: dict, show: Progress) -> None:
    """Read the server's messages for this prompt until it ends; raise FailedError if it failed."""
    done: set[str] = set()
    for raw in _ws_messages(ws):
        event = json.loads(raw)
        kind, data = event.get("type"), event.get("data") or {}
        if data.get("prompt_id") not in (None, prompt_id):
            continue
        if kind == "execution_cached":
            done.update(data.get("nodes", []))
        elif kind == "executing" and data.get("node") is not None:
            node = str(data["node"])
            done.add(node)
            show(f"[{len(done)}/{len(graph)}] {graph.get(node, {}).get('class_type', node)}")
        elif kind == "progress":
            node = str(data.get("node"))
            show(f"[{len(done)}/{len(graph)}] {graph.get(node, {}).get('class_type', node)} "
                 f"{data.get('value')}/{data.get('max')}")
        elif kind == "execution_error":
            raise FailedError(f"{data.get('node_type', '?')} (node {data.get('node_id', '?')}): "
                              f"{data.get('exception_message', '').strip()}")
        elif kind == "execution_interrupted":
            raise FailedError("the run was interrupted on the server")
        elif kind == "execution_success" or (kind == "executing" and data.get("node") is None):
            return


def history(server: str, prompt_id: str, timeout: float, poll: float = 0.5) -> dict:
    """The finished prompt's history entry (waits for it: also the fallback when no websocket is reachable)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        entry = _http_json(server, f"/history/{prompt_id}").get(prompt_id)
        if entry is not None and entry.get("status", {}).get("completed") is not None:
            status = entry["status"]
            for kind, data in status.get("messages", []):
                if kind == "execution_error":
                    raise FailedError(f"{data.get('node_type', '?')} (node {data.get('node_id', '?')}): "
                                      f"{data.get('exception_message', '').strip()}")
            return entry
        time.sleep(poll)
    raise FailedError(f"prompt {prompt_id} did not finish within {timeout:.0f} s")


def download(server: str, entry: dict, out_dir: str) -> list[str]:
    """Save the images the workflow wrote (not previews) into out_dir; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    saved = []
    for output in entry.get("outputs", {}).values():
        for image in output.get("images", []):
            if image.get("type") != "output":
                continue
            query = urllib.parse.urlencode({k: image.get(k, "") for k in ("filename", "subfolder", "type")})
            target = os.path.join(out_dir, os.path.basename(image["filename"]))
            with urllib.request.urlopen(f"{server.rstrip('/')}/view?{query}", timeout=60) as response:
                data = response.read()
            with open(target + ".part", "wb") as handle:
                handle.write(data)
            os.replace(target + ".part", target)
            saved.append(target)
    return saved


def run(server: str, graph: dict, timeout: float = 3600.0, show: Progress | None = None) -> dict:
    """Queue `graph`, follow it to the end, return its history entry."""
    show = show or (lambda _text: None)
    client_id = uuid.uuid4().hex
    try:
        ws = _ws_connect(server, client_id, timeout)
    except OSError:
        ws = None  # no websocket: poll the history instead
    try:
        prompt_id = submit(server, graph, client_id)
        if ws is not None:
            follow(ws, prompt_id, graph, show)
    finally:
        if ws is not None:
            ws.close()
    return history(server, prompt_id, timeout)


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

    def show(text: str) -> None:
        sys.stderr.write(f"\r{text[:100]:<100}")
        sys.stderr.flush()

    try:
        graph = apply_settings(load_workflow(args.workflow), args.set)
        entry = run(args.server, graph, args.timeout, show)
    except (WorkflowError, OSError, json.JSONDecodeError) as err:
        print(f"\nerror: {err}", file=sys.stderr)
        return 2
    except RejectedError as err:
        print(f"\nthe server refused the workflow:\n{err}", file=sys.stderr)
        return 2
    except FailedError as err:
        print(f"\nthe workflow failed: {err}", file=sys.stderr)
        return 1
    sys.stderr.write("\n")
    outputs = [image for output in entry.get("outputs", {}).values() for image in output.get("images", [])
               if image.get("type") == "output"]
    for path in download(args.server, entry, args.out) if args.out else []:
        print(path)
    if not args.out:
        for image in outputs:
            print(os.path.join(image.get("subfolder", ""), image["filename"]))
    return 0
