"""The boss's status page: a small HTTP server in a thread, serving a snapshot the boss loop publishes.

The boss loop calls :meth:`StatusServer.publish` at most twice a second with a
fresh snapshot dict (a reference swap); the HTTP thread encodes it to JSON when
a page asks for it, once per snapshot whatever the number of viewers, so an
unwatched page costs the boss's loop nothing (encoding the 3 000-task timeline
at every publish took 70 % of the boss's CPU with ten busy agents).  Every
request needs the token (``?token=``): TAYLORISM_HTTP_TOKEN, or
``<key dir>/http-token`` (written there when there is none).  The page shows
what an admin's status shows, every user's jobs, failures and output tails:
its token is an admin's, and the boss never logs it.

The server is bounded as the metrics' is (:mod:`.http_bounds`): requests at
once, time to send a request, time silent.  The JSON never carries NaN or
Infinity (browsers refuse it): such numbers go as null.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import os
import secrets
import threading
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .http_bounds import BoundedHandler, BoundedHTTPServer, serve

log = logging.getLogger("taylorism_zmq.boss")


def finite(value: Any) -> Any:
    """*value* with every NaN or infinite float replaced by None (JSON has no such numbers)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def load_token(key_dir: str) -> tuple[str, str]:
    """The page's token, and where an admin finds it: TAYLORISM_HTTP_TOKEN (set by a client for the boss it
    starts), else the key directory's ``http-token`` if one is there, else a fresh one written there (0600,
    in the 0700 key directory: the boss never logs it)."""
    if os.environ.get("TAYLORISM_HTTP_TOKEN", "").strip():
        return os.environ["TAYLORISM_HTTP_TOKEN"].strip(), "TAYLORISM_HTTP_TOKEN"
    path = Path(key_dir) / "http-token"
    try:
        token = path.read_text().strip()
        if token:
            return token, str(path)
    except OSError:
        pass
    token = secrets.token_urlsafe(18)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
    except OSError as exc:
        log.warning("the status page's token could not be kept in %s (%s): set TAYLORISM_HTTP_TOKEN, or write a "
                    "token of your own there", path, exc.strerror or exc)
        return token, "nowhere (see the warning above)"
    return token, str(path)


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

        class Handler(BoundedHandler):
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

        self.httpd = BoundedHTTPServer((host or "127.0.0.1", int(port)), Handler, "status page")

    @property
    def address(self) -> str:
        """Where the page is served (its token is never part of what the boss logs)."""
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}/"

    @property
    def url(self) -> str:
        return f"{self.address}?token={self.token}"

    def start(self) -> None:
        self.thread = serve(self.httpd)

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
