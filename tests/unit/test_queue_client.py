"""The queue client (`python -m comfyui_layer_sketch.queue_workflow`) against a fake ComfyUI on 127.0.0.1.

The fake answers POST /prompt, GET /history/<id> and GET /view, and speaks real websocket frames on /ws:
text frames of every length encoding, a binary preview, a ping, a message split over two frames, a close.
A variant without /ws makes the client poll the history instead. Standard library only, like the client:
these tests run in a plain Python with no torch and no ComfyUI (`python -m pytest tests/unit/test_queue_client.py`).
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import queue
import struct
import sys
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import hostimport
import pytest

client = hostimport.queue_client()

PROMPT_ID = "prompt-1"
GRAPH = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "model.safetensors"}},
         "2": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
         "3": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "latent_image": ["2", 0], "steps": 4}},
         "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "renders/t"}}}
IMAGES = {"t_00001_.png": b"\x89PNG first image", "t_00002_.png": b"\x89PNG second image"}
FAILURE = {"prompt_id": PROMPT_ID, "node_id": "3", "node_type": "KSampler", "exception_type": "ValueError",
           "exception_message": "The latent is 8x8 px but the image is 9x8 px\n", "traceback": []}
NODE_ERRORS = {"1": {"class_type": "CheckpointLoaderSimple", "dependent_outputs": ["4"], "errors": [
    {"type": "value_not_in_list", "message": "Value not in list", "extra_info": {"input_name": "ckpt_name"},
     "details": "ckpt_name: 'model.safetensors' not in ['other.safetensors']"}]}}
REFUSAL = {"error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation"},
           "node_errors": NODE_ERRORS}
PING = b"are you there"


@dataclass
class Fake:
    """How the fake server behaves, and what it saw."""

    websocket: bool = True  # False: /ws answers 404, so the client polls
    outcome: str = "success"  # "success", "error" (fails while running), "refused" (HTTP 400), "partly refused"
    close_early: bool = False  # the websocket closes before the run ends
    posted: list = field(default_factory=list)
    ws_client_ids: list = field(default_factory=list)
    length_codes: set = field(default_factory=set)  # 7-bit, 16-bit, 64-bit payload lengths sent
    replies: list = field(default_factory=list)  # (opcode, payload, masked) of the client's frames
    history_requests: int = 0
    submitted: queue.Queue = field(default_factory=queue.Queue)


def _message(kind: str, **data: object) -> bytes:
    return json.dumps({"type": kind, "data": data}).encode()


def _padded(kind: str, size: int, **data: object) -> bytes:
    """A message of at least `size` bytes (the host's messages carry long fields too)."""
    return _message(kind, **data, padding="x" * size)


def _script(fake: Fake) -> Iterator[tuple[int, bytes, bool]]:
    """(opcode, payload, final) of each frame sent after the prompt is queued."""
    ours = {"prompt_id": PROMPT_ID}
    yield 0x1, _message("execution_start", **ours), True
    yield 0x1, _message("execution_cached", nodes=["1"], **ours), True
    yield 0x1, _message("progress", value=99, max=99, node="3", prompt_id="someone else's"), True
    yield 0x1, _message("executing", node="2", **ours), True
    yield 0x1, _message("executing", node="3", **ours), True
    if fake.outcome == "error":
        yield 0x1, _message("execution_error", **FAILURE), True
        return
    yield 0x1, _padded("progress", 300, value=1, max=4, node="3", **ours), True
    # A preview: binary, and skipped even where its bytes read as a message that would end the run.
    yield 0x2, struct.pack(">II", 1, 2) + _padded("execution_error", 1000, **FAILURE), True
    yield 0x9, PING, True
    yield 0x1, _padded("progress", 70_000, value=2, max=4, node="3", **ours), True
    if fake.close_early:
        yield 0x8, struct.pack(">H", 1001), True
        return
    split = _message("progress", value=3, max=4, node="3", **ours)
    yield 0x1, split[:10], False
    yield 0x0, split[10:], True
    yield 0x1, _message("executing", node="4", **ours), True
    yield 0x1, _message("executed", node="4", output={"images": []}, **ours), True
    yield 0x1, _message("execution_success", **ours), True
    yield 0x8, struct.pack(">H", 1000), True


def _frame(fake: Fake, opcode: int, payload: bytes, final: bool = True) -> bytes:
    """A server frame (unmasked), with the shortest length encoding as RFC 6455 asks."""
    head = bytes([(0x80 if final else 0) | opcode])
    if len(payload) < 126:
        fake.length_codes.add("7-bit")
        return head + bytes([len(payload)]) + payload
    if len(payload) < 65536:
        fake.length_codes.add("16-bit")
        return head + bytes([126]) + struct.pack(">H", len(payload)) + payload
    fake.length_codes.add("64-bit")
    return head + bytes([127]) + struct.pack(">Q", len(payload)) + payload


def _history_entry(outcome: str) -> dict:
    messages = [["execution_start", {"prompt_id": PROMPT_ID}], ["execution_cached", {"nodes": ["1"]}]]
    if outcome == "error":
        status = {"status_str": "error", "completed": False, "messages": [*messages, ["execution_error", FAILURE]]}
        return {"prompt": [], "outputs": {}, "status": status}
    saved = [{"filename": name, "subfolder": "renders", "type": "output"} for name in IMAGES]
    outputs = {"4": {"images": saved}, "5": {"images": [{"filename": "p.png", "subfolder": "", "type": "temp"}]}}
    status = {"status_str": "success", "completed": True,
              "messages": [*messages, ["execution_success", {"prompt_id": PROMPT_ID}]]}
    return {"prompt": [], "outputs": outputs, "status": status}


class _Handler(http.server.BaseHTTPRequestHandler):
    fake: Fake
    timeout = 10  # a client that stops reading fails the test instead of hanging it

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, code: int, body: bytes, kind: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.fake.posted.append(body)
        if self.fake.outcome == "refused":
            return self._send(400, json.dumps(REFUSAL).encode())
        errors = NODE_ERRORS if self.fake.outcome == "partly refused" else {}
        if not errors:
            self.fake.submitted.put(body)  # the websocket starts reporting the run
        self._send(200, json.dumps({"prompt_id": PROMPT_ID, "number": 0, "node_errors": errors}).encode())

    def do_GET(self) -> None:
        url = urllib.parse.urlparse(self.path)
        query = urllib.parse.parse_qs(url.query)
        if url.path == "/ws" and self.fake.websocket:
            return self._websocket(query["clientId"][0])
        if url.path == f"/history/{PROMPT_ID}":
            self.fake.history_requests += 1  # the host records a prompt once it has ended: not at the first look
            entry = {} if self.fake.history_requests == 1 else {PROMPT_ID: _history_entry(self.fake.outcome)}
            return self._send(200, json.dumps(entry).encode())
        name = query.get("filename", [""])[0]
        if url.path == "/view" and name in IMAGES and query.get("subfolder") == ["renders"]:
            return self._send(200, IMAGES[name], "image/png")
        self._send(404, b'{"error": "not found"}')

    def _websocket(self, client_id: str) -> None:
        self.close_connection = True
        self.fake.ws_client_ids.append(client_id)
        accept = base64.b64encode(hashlib.sha1((self.headers["Sec-WebSocket-Key"] + client.WEBSOCKET_GUID).encode())
                                  .digest()).decode()
        handshake = ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     f"Sec-WebSocket-Accept: {accept}\r\n\r\n").encode()
        # ComfyUI greets with the queue's status at once: its frame arrives with the handshake's bytes.
        greeting = _message("status", status={"exec_info": {"queue_remaining": 0}}, sid=client_id)
        self.connection.sendall(handshake + _frame(self.fake, 0x1, greeting))
        if self.fake.outcome in ("refused", "partly refused"):
            return
        self.fake.submitted.get(timeout=10)
        for opcode, payload, final in _script(self.fake):
            self.connection.sendall(_frame(self.fake, opcode, payload, final))
            if opcode == 0x9:
                self.fake.replies.append(self._read_frame())

    def _read_frame(self) -> tuple[int, bytes, bool]:
        first, second = self.rfile.read(2)
        mask = self.rfile.read(4) if second & 0x80 else bytes(4)
        payload = self.rfile.read(second & 0x7F)  # the client's control frames are short
        return first & 0x0F, bytes(b ^ mask[i % 4] for i, b in enumerate(payload)), bool(second & 0x80)


class _Server(http.server.ThreadingHTTPServer):
    block_on_close = False  # a websocket handler may outlive its test by a moment

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client that hung up once it had its answer
            super().handle_error(request, client_address)


@pytest.fixture
def serve() -> Iterator[Callable[[Fake], str]]:
    """Start a fake ComfyUI; returns its URL."""
    servers = []

    def start(fake: Fake) -> str:
        server = _Server(("127.0.0.1", 0), type("Handler", (_Handler,), {"fake": fake}))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _queue(url: str, tmp_path: Path, capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    """Run the command line as a user would; (exit status, stdout, stderr)."""
    workflow = tmp_path / "workflow.json"
    workflow.write_text(json.dumps(GRAPH))
    code = client.main([str(workflow), "--server", url, "--timeout", "30", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_websocket_frames_of_every_kind_are_read_and_the_images_downloaded(serve, tmp_path, capsys):
    fake = Fake()
    code, out, err = _queue(serve(fake), tmp_path, capsys, "--set", "KSampler.steps=9", "--out", str(tmp_path / "o"))
    assert code == 0, err
    assert fake.length_codes == {"7-bit", "16-bit", "64-bit"}, "the fake sent every length encoding"
    assert out.split() == [str(tmp_path / "o" / name) for name in IMAGES]
    assert {path.name: path.read_bytes() for path in (tmp_path / "o").iterdir()} == IMAGES, "saved images only"
    for line in ("[2/4] EmptyLatentImage", "[3/4] KSampler 1/4", "[3/4] KSampler 2/4", "[3/4] KSampler 3/4",
                 "[4/4] SaveImage"):
        assert line in err, f"progress {line!r} not shown: {err!r}"
    assert "99/99" not in err, "another prompt's progress is not shown"
    assert fake.replies == [(0xA, PING, True)], "the ping is answered with a masked pong"
    [posted] = fake.posted
    assert posted["prompt"]["3"]["inputs"]["steps"] == 9 and posted["client_id"] == fake.ws_client_ids[0]


def test_without_a_websocket_the_client_polls_and_reports_the_same(serve, tmp_path, capsys):
    results = []
    for websocket in (True, False):
        fake = Fake(websocket=websocket)
        out_dir = tmp_path / f"websocket_{websocket}"
        code, out, err = _queue(serve(fake), tmp_path, capsys, "--out", str(out_dir))
        files = {path.name: path.read_bytes() for path in out_dir.iterdir()}
        results.append((code, out.replace(str(out_dir), "OUT"), files))
    assert results[0] == results[1] and results[0][0] == 0
    assert fake.ws_client_ids == [] and fake.history_requests == 2
    assert f"waiting for prompt {PROMPT_ID}" in err, "polling shows progress too"


def test_without_out_the_paths_under_the_servers_output_folder_are_printed(serve, tmp_path, capsys):
    code, out, _err = _queue(serve(Fake(websocket=False)), tmp_path, capsys)
    assert code == 0
    assert out.split() == [f"renders/{name}" for name in IMAGES]


def test_a_websocket_closed_before_the_end_leaves_the_result_to_the_history(serve, tmp_path, capsys):
    fake = Fake(close_early=True)
    code, out, err = _queue(serve(fake), tmp_path, capsys, "--out", str(tmp_path / "o"))
    assert code == 0, err
    assert "[3/4] KSampler 2/4" in err and "[4/4]" not in err
    assert out.split() == [str(tmp_path / "o" / name) for name in IMAGES]


@pytest.mark.parametrize("websocket", [True, False], ids=["websocket", "polling"])
def test_a_run_that_fails_exits_1_with_the_hosts_message(serve, tmp_path, capsys, websocket):
    url = serve(Fake(websocket=websocket, outcome="error"))
    code, out, err = _queue(url, tmp_path, capsys, "--out", str(tmp_path / "o"))
    assert code == 1 and out == ""
    assert "the workflow failed: KSampler (node 3): The latent is 8x8 px but the image is 9x8 px" in err
    assert not (tmp_path / "o").exists()
    result = client.run(url, GRAPH, timeout=30)  # what scripts and the tests get from the same run
    assert not result.ok and result.error["exception_message"] == FAILURE["exception_message"]


@pytest.mark.parametrize("outcome", ["refused", "partly refused"])
def test_a_refused_workflow_exits_2_with_the_node_errors_and_a_hint(serve, tmp_path, capsys, outcome):
    code, out, err = _queue(serve(Fake(outcome=outcome)), tmp_path, capsys, "--out", str(tmp_path / "o"))
    assert code == 2 and out == ""
    assert "the server refused the workflow" in err
    assert ("node 1 (CheckpointLoaderSimple): Value not in list: ckpt_name: 'model.safetensors' not in "
            "['other.safetensors']") in err
    assert "Hint: ckpt_name names a file the server does not have: put it into models/checkpoints/" in err
    assert ("the rest run as prompt" in err) == (outcome == "partly refused")
    assert not (tmp_path / "o").exists()


def test_hints_name_the_models_folder_once_per_input_and_skip_other_errors():
    refusal = {"node_errors": {
        **NODE_ERRORS, "7": {"class_type": "CheckpointLoaderSimple", "errors": NODE_ERRORS["1"]["errors"]},
        "8": {"class_type": "LoadImage", "errors": [{"type": "custom_validation_failed", "details": "image: no file"}]},
        "9": {"class_type": "KSampler",
              "errors": [{"type": "value_not_in_list", "details": "sampler_name: 'x' not in"}]},
    }}
    hints = client.missing_value_hints(refusal, remedy=lambda folder: f"see {folder}")
    assert hints == ["Hint: ckpt_name names a file the server does not have: see checkpoints.",
                     "Hint: sampler_name must be one of the values the server lists; if it names a model file, "
                     "see <folder>."]
