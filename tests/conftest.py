"""Shared test setup: point the data loaders at the shipped offline data and a scratch cache."""

import atexit
import contextlib
import json
import os
import shutil
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parent.parent

os.environ.setdefault("TASFT_DATA_DIR", str((_REPO_ROOT / ".." / "shared" / "data").resolve()))
if "TASFT_CACHE_DIR" not in os.environ:  # one per session (xdist workers inherit it), then gone
    os.environ["TASFT_CACHE_DIR"] = tempfile.mkdtemp(prefix="tasft_test_cache_")
    atexit.register(shutil.rmtree, os.environ["TASFT_CACHE_DIR"], ignore_errors=True)


@contextlib.contextmanager
def serve_json(answer):
    """A local HTTP JSON endpoint for clients of OpenAI-style APIs (the real client library
    talks to it over a socket). ``answer(path, headers, body)`` -> (status, headers, payload).
    Yields the base URL (``http://127.0.0.1:PORT/v1``)."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length) or b"{}")
            status, headers, payload = answer(self.path, self.headers, body)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
