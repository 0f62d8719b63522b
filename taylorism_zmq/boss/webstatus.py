"""The boss's status page: a small HTTP server in a thread, serving a snapshot the boss loop publishes.

The boss loop calls :meth:`StatusServer.publish` at most twice a second with a
JSON-ready dict; the HTTP thread only swaps in and serves the bytes it was
given, so page views cost the boss nothing.  Every request needs the token
(``?token=``), printed at start-up or read from ``<key dir>/http-token``.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger("taylorism_zmq.boss")


def load_token(key_dir: str) -> str:
    """The page's token: from the key directory if one is there, else a fresh one."""
    path = os.path.join(key_dir, "http-token")
    try:
        with open(path) as f:
            token = f.read().strip()
        if token:
            return token
    except OSError:
        pass
    return secrets.token_urlsafe(18)


class StatusServer:
    """Serve ``/`` (the page) and ``/api/status`` (the last snapshot) on *address* ("host:port")."""

    def __init__(self, address: str, token: str):
        host, _, port = address.rpartition(":")
        if not port.isdigit():
            raise ValueError(f"--http wants HOST:PORT, not {address!r}")
        self.token = token
        self._body = b"{}"
        self._page = resources.files("taylorism_zmq.boss.web").joinpath("index.html").read_bytes()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server name
                url = urlsplit(self.path)
                given = parse_qs(url.query).get("token", [""])[0]
                if not hmac.compare_digest(given.encode(), server.token.encode()):
                    self._send(401, b"a token is needed: ?token=... (printed by taylorism-boss at start-up)",
                               "text/plain")
                elif url.path == "/":
                    self._send(200, server._page, "text/html; charset=utf-8")
                elif url.path == "/api/status":
                    self._send(200, server._body, "application/json")
                else:
                    self._send(404, b"not found", "text/plain")

            def _send(self, code: int, body: bytes, kind: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, fmt: str, *args: Any) -> None:
                log.debug("http %s", fmt % args)

        self.httpd = ThreadingHTTPServer((host or "127.0.0.1", int(port)), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="taylorism-http", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}/?token={self.token}"

    def start(self) -> None:
        self.thread.start()

    def publish(self, snapshot: dict[str, Any]) -> None:
        self._body = json.dumps(snapshot).encode()  # one reference swap: the HTTP thread sees old or new

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
