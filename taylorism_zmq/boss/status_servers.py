"""The boss's two HTTP servers, the status page (``--http``) and the Prometheus metrics (``--metrics-port``):
started beside the loop, fed a fresh snapshot of the status at each of its checks, stopped with it.  Each
serves from a thread of its own (:mod:`.webstatus`, :mod:`.metrics`); the loop only swaps the snapshot."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..wire import security
from ..wire.sockets import EndpointInUseError
from .pair_clock import Clock
from .peer import Pair
from .state import BossState

if TYPE_CHECKING:
    from .metrics import BossMetrics
    from .webstatus import StatusServer

log = logging.getLogger("taylorism_zmq.boss")


class StatusServers:
    """The status page and the metrics of one boss, each if asked for (*http*, *metrics_port*)."""

    def __init__(self, state: BossState, pair: Pair | None, clock: Clock, http: str | None,
                 metrics_port: int | None, metrics_address: str) -> None:
        self.state = state
        self.pair = pair
        self.clock = clock
        self.http = http
        self.metrics_port, self.metrics_address = metrics_port, metrics_address
        self.status_server: StatusServer | None = None
        self.metrics: BossMetrics | None = None

    @property
    def serving(self) -> bool:
        """Whether any server is up (the loop then refreshes their snapshot twice a second)."""
        return self.status_server is not None or self.metrics is not None

    def start(self) -> None:
        """Start the servers asked for, each with a first snapshot; an address that cannot be served raises
        :class:`~..wire.sockets.EndpointInUseError`."""
        if self.http:
            from .webstatus import StatusServer, load_token

            token, kept = load_token(str(security.key_dir()))
            with _serving("the status page (--http)", self.http):
                self.status_server = StatusServer(self.http, token)
            self.status_server.publish(self.status(self.clock(), page=True))
            self.status_server.start()
            log.info("status page: %s?token=... (the token, an admin's: %s)", self.status_server.address, kept)
        if self.metrics_port is not None:
            from .metrics import BossMetrics

            with _serving("the metrics (--metrics-port)", f"{self.metrics_address}:{self.metrics_port}"):
                self.metrics = BossMetrics(self.metrics_port or 0, self.metrics_address)
            ledger = self.state.ledger
            ledger.on_dispatch = self.metrics.dispatch_latency.observe
            ledger.on_task_end = self.metrics.task_duration.observe
            self.metrics.publish(self.status(self.clock()))
            log.info("Prometheus metrics: http://%s:%d/metrics", self.metrics_address, self.metrics.port)

    def publish(self, now: float) -> None:
        """A fresh snapshot for the status page and the metrics."""
        if self.serving:
            snapshot = self.status(now, page=self.status_server is not None)
            for server in (self.status_server, self.metrics):
                if server is not None:
                    server.publish(snapshot)

    def status(self, now: float, page: bool = False) -> dict[str, Any]:
        """The boss's status, with the pair's side of it."""
        snapshot = self.state.status(now, page=page)
        if self.pair is not None:
            snapshot["pair"] = self.pair.status(now)
        return snapshot

    def stop(self) -> None:
        """Stop the servers started."""
        if self.status_server is not None:
            self.status_server.stop()
        if self.metrics is not None:
            self.metrics.stop()


@contextlib.contextmanager
def _serving(what: str, address: str) -> Iterator[None]:
    """Say in one line why an HTTP server of the boss cannot start (a busy port, an address not here)."""
    try:
        yield
    except OSError as exc:
        raise EndpointInUseError(f"cannot serve {what} at {address}: {exc.strerror or exc}") from None
