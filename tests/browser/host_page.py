"""A host application's web server on its own origin: pages that use the hub cross-origin.

It serves the pages a test puts in ``pages`` and the stock htmx files from npm
(``tests/browser/node_modules``, installed by deploy/test.sh from tests/browser/package.json).
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

NODE_MODULES = Path(__file__).resolve().parent / "node_modules"
VENDOR = {
    "/vendor/htmx.min.js": NODE_MODULES / "htmx.org" / "dist" / "htmx.min.js",
    "/vendor/sse.js": NODE_MODULES / "htmx-ext-sse" / "sse.js",
}


class HostSite:
    """A tiny static site on 127.0.0.1 with a port of its own (so another origin than the hub)."""

    def __init__(self) -> None:
        self.pages: dict[str, str] = {}
        missing = [str(p) for p in VENDOR.values() if not p.exists()]
        if missing:
            pytest.fail(f"{missing} missing: run `npm ci --prefix tests/browser` (deploy/test.sh)")
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                if path in site.pages:
                    body, kind = site.pages[path].encode(), "text/html; charset=utf-8"
                elif path in VENDOR:
                    body, kind = VENDOR[path].read_bytes(), "text/javascript"
                else:  # /favicon.ico too: a 204 keeps the console free of a 404
                    self.send_response(204)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
