"""The bounds of the boss's HTTP servers (the status page, the metrics): requests at once, time to send a
request, time in all, time silent.

Each request is served on a thread of its own, at most :data:`MAX_CONNECTIONS` at once.  A client has
:data:`HEAD_TIMEOUT` seconds to send its request line and headers (a client dribbling a byte every few seconds
held a thread for ever: 16 such closed every page request for 20 s), :data:`REQUEST_TIMEOUT` for all of it,
reading the answer included, and a connection silent for :data:`IDLE_TIMEOUT` seconds is closed.  When every
thread is busy, a new connection takes the place of the one that has waited longest for its request to come
in, if one has waited :data:`TAKE_OVER_AFTER`; else it is closed at once.  Either is counted and logged
(rate-limited).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ..wire.peer_logging import worth_logging

log = logging.getLogger("taylorism_zmq.boss")

#: requests served at once (each on a thread of its own)
MAX_CONNECTIONS = 16
#: seconds a connection may stay silent before it is closed
IDLE_TIMEOUT = 10.0
#: seconds a client has to send its request line and headers
HEAD_TIMEOUT = 5.0
#: seconds a request may take in all, its answer read included (a client reading a byte now and then)
REQUEST_TIMEOUT = 60.0
#: seconds a connection must have waited for its request before a new one may take its place, and seconds the
#: new one then waits for its thread
TAKE_OVER_AFTER, TAKE_OVER_WAIT = 0.5, 1.0


class BoundedHTTPServer(ThreadingHTTPServer):
    """A thread per request, but at most MAX_CONNECTIONS of them, each with HEAD_TIMEOUT seconds to send its
    request (its handler is a :class:`BoundedHandler`)."""

    daemon_threads = True
    #: connections the kernel queues before they are accepted (socketserver's 5 made a burst of connections
    #: wait a second each, their SYN dropped and sent again, although each is accepted or closed at once)
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type[BoundedHandler], what: str):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self._stopped = threading.Event()  # (before binding: a failed bind closes the server)
        super().__init__(address, handler)
        self.what = what
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        #: the connections still reading their request, and since when; every connection served, and since when
        self._reading: dict[socket.socket, float] = {}
        self._serving: dict[socket.socket, float] = {}
        self._lock = threading.Lock()
        #: connections closed because MAX_CONNECTIONS were being served, and those let go for being slow
        self.refused = 0
        self.timed_out = 0
        self._reaper = threading.Thread(target=self._reap, name=f"taylorism-{what}-reaper", daemon=True)
        self._reaper.start()

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            slowest = self._slowest()
            if slowest is None or not (self._let_go(slowest, "to serve a new one")
                                       and self._slots.acquire(timeout=TAKE_OVER_WAIT)):
                self.refused += 1
                if worth_logging(self.refused):
                    log.warning("%s: %d connection(s) closed at once, %d being served already", self.what,
                                self.refused, MAX_CONNECTIONS)
                self.shutdown_request(request)
                return
        with self._lock:
            self._reading[request] = self._serving[request] = time.monotonic()
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._done(request)
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._done(request)
            self._slots.release()

    def _done_reading(self, request: socket.socket) -> None:
        with self._lock:
            self._reading.pop(request, None)

    def _done(self, request: socket.socket) -> None:
        with self._lock:
            self._reading.pop(request, None)
            self._serving.pop(request, None)

    def _slowest(self) -> socket.socket | None:
        """The connection that has waited longest for its request, if one has waited TAKE_OVER_AFTER."""
        with self._lock:
            slowest = min(self._reading, key=self._reading.__getitem__, default=None)
            if slowest is None or time.monotonic() - self._reading[slowest] < TAKE_OVER_AFTER:
                return None
            return slowest

    def _let_go(self, request: socket.socket, why: str, reading: bool = True) -> bool:
        """Shut a connection down (its thread sees the end of it and ends)."""
        with self._lock:
            if (self._reading if reading else self._serving).pop(request, None) is None:
                return False
        self.timed_out += 1
        if worth_logging(self.timed_out):
            log.warning("%s: let go a connection %s, %s (%d so far)", self.what,
                        "that had not sent its request yet" if reading else "whose request took too long", why,
                        self.timed_out)
        try:
            request.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        return True

    def _reap(self) -> None:
        """Let go the connections whose request has not come in HEAD_TIMEOUT seconds, or that have taken
        REQUEST_TIMEOUT in all."""
        while not self._stopped.wait(0.25):
            now = time.monotonic()
            with self._lock:
                late = [r for r, since in self._reading.items() if now - since > HEAD_TIMEOUT]
                slow = [r for r, since in self._serving.items() if now - since > REQUEST_TIMEOUT]
            for request in late:
                self._let_go(request, f"in {HEAD_TIMEOUT:g} s")
            for request in slow:
                self._let_go(request, f"{REQUEST_TIMEOUT:g} s", reading=False)

    def server_close(self) -> None:
        self._stopped.set()
        super().server_close()


class BoundedHandler(BaseHTTPRequestHandler):
    """A request handler whose request must come in HEAD_TIMEOUT seconds (see :class:`BoundedHTTPServer`)."""

    timeout = IDLE_TIMEOUT  # on the connection's socket: a silent client does not keep its thread
    server: BoundedHTTPServer

    def parse_request(self) -> bool:
        ok = super().parse_request()  # (it reads the headers)
        self.server._done_reading(self.request)
        return ok


def serve(server: BoundedHTTPServer) -> threading.Thread:
    """Serve *server* from a daemon thread."""
    thread = threading.Thread(target=server.serve_forever, name=f"taylorism-{server.what}", daemon=True)
    thread.start()
    return thread
