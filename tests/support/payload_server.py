"""A real HTTP server on 127.0.0.1 serving one known payload under a few names (the download tests).

`/<any folder>/NAME` as a weight mirror serves it, and `/view?filename=NAME` as ComfyUI's /view route does:
good.bin (the payload), truncated.bin (a body shorter than its Content-Length), etag.bin and etag-wrong.bin
(the payload with a right or wrong SHA-256 stated in X-Linked-Etag). Other names: 404.
"""

from __future__ import annotations

import hashlib
import http.server
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
NAMES = ("good.bin", "truncated.bin", "etag.bin", "etag-wrong.bin")


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's naming)
        url = urllib.parse.urlsplit(self.path)
        name = urllib.parse.parse_qs(url.query).get("filename", [""])[0] if url.path == "/view" else url.path
        name = name.rsplit("/", 1)[-1]
        if name not in NAMES:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD)))
        if name.startswith("etag"):
            stated = PAYLOAD_SHA if name == "etag.bin" else "0" * 64
            self.send_header("X-Linked-Etag", f'"{stated}"')
        self.end_headers()
        self.wfile.write(PAYLOAD[: len(PAYLOAD) // 3] if name == "truncated.bin" else PAYLOAD)

    def log_message(self, *args):
        pass


@contextmanager
def payload_server() -> Iterator[str]:
    """The server's base URL (`http://127.0.0.1:PORT`) while the block runs."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
