"""The boss's status page: a small HTTP server in a thread, serving a snapshot the boss loop publishes.

The boss loop calls :meth:`StatusServer.publish` at most twice a second with a
fresh snapshot dict (a reference swap); the HTTP thread encodes it to JSON when
a page asks for it, once per snapshot whatever the number of viewers, so an
unwatched page costs the boss's loop nothing (encoding the 3 000-task timeline
at every publish took 70 % of the boss's CPU with ten busy agents).  Every
request needs the token (``?token=``), printed at start-up or read from
``<key dir>/http-token``.

The server is bounded: at most :data:`MAX_CONNECTIONS` requests are served at
once (one thread each; a connection beyond them is closed at once, and
counted), and a connection that sends nothing for :data:`IDLE_TIMEOUT`
seconds is closed.  The JSON never carries NaN or Infinity (browsers refuse
it): such numbers go as null.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import os
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..wire.peer_logging import worth_logging

log = logging.getLogger("taylorism_zmq.boss")

#: requests served at once (each on a thread of its own); more connections are closed at once
MAX_CONNECTIONS = 16
#: seconds a connection may stay silent before it is closed
IDLE_TIMEOUT = 10.0


class _BoundedServer(ThreadingHTTPServer):
    """A thread per request, but at most MAX_CONNECTIONS of them."""

    daemon_threads = True
    #: connections the kernel queues before they are accepted (socketserver's 5 made a burst of connections
    #: wait a second each, their SYN dropped and sent again, although each is accepted or closed at once)
    request_queue_size = 128

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        #: connections closed because MAX_CONNECTIONS were being served
        self.refused = 0

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.refused += 1
            if worth_logging(self.refused):
                log.warning("status page: %d connection(s) closed at once, %d being served already",
                            self.refused, MAX_CONNECTIONS)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


def finite(value: Any) -> Any:
    """*value* with every NaN or infinite float replaced by None (JSON has no such numbers)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def load_token(key_dir: str) -> str:
    """The page's token: TAYLORISM_HTTP_TOKEN (set by a client for the boss it starts), else the key
    directory's if one is there, else a fresh one."""
    if os.environ.get("TAYLORISM_HTTP_TOKEN", "").strip():
        return os.environ["TAYLORISM_HTTP_TOKEN"].strip()
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
        #: the last snapshot published, and the JSON of the last one encoded (and which it was)
        self._snapshot: dict[str, Any] | None = None
        self._encoded: tuple[dict[str, Any] | None, bytes] = (None, b"{}")
        self._encoding = threading.Lock()
        self._page = resources.files("taylorism_zmq.boss.web").joinpath("index.html").read_bytes()
        server = self

        class Handler(BaseHTTPRequestHandler):
            timeout = IDLE_TIMEOUT  # on the connection's socket: a silent client does not keep its thread

            def do_GET(self) -> None:  # noqa: N802 - the http.server name
                url = urlsplit(self.path)
                given = parse_qs(url.query).get("token", [""])[0]
                if not hmac.compare_digest(given.encode(), server.token.encode()):
                    self._send(401, b"a token is needed: ?token=... (printed by taylorism-boss at start-up)",
                               "text/plain")
                elif url.path == "/":
                    self._send(200, server._page, "text/html; charset=utf-8")
                elif url.path == "/api/status":
                    self._send(200, server.body(), "application/json")
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

        self.httpd = _BoundedServer((host or "127.0.0.1", int(port)), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="taylorism-http", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}/?token={self.token}"

    def start(self) -> None:
        self.thread.start()

    def publish(self, snapshot: dict[str, Any]) -> None:
        """A fresh snapshot (the loop never changes it after: it is built anew each time)."""
        self._snapshot = snapshot  # one reference swap: the HTTP thread sees old or new

    def body(self) -> bytes:
        """The last snapshot as JSON, encoded once (in the HTTP thread that asks first)."""
        with self._encoding:
            snapshot = self._snapshot
            if snapshot is not None and snapshot is not self._encoded[0]:
                self._encoded = (snapshot, json.dumps(finite(snapshot), allow_nan=False).encode())
            return self._encoded[1]

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
