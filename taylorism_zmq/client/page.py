"""The status page of the daemons a client starts itself (the embedded default, a :class:`~.local.LocalCluster`).

The client picks the page's address and token, so that it can say the URL once; the boss it starts serves the
page there (``--http``), with that token (``TAYLORISM_HTTP_TOKEN`` in the boss's environment only).
"""

from __future__ import annotations

import os
import secrets
import socket
import sys

#: where a page asked for by port only is served (loopback: reach it from elsewhere through an SSH tunnel)
PAGE_HOST = "127.0.0.1"
#: the boss's environment variable that carries the page's token (see webstatus.load_token)
TOKEN_ENV = "TAYLORISM_HTTP_TOKEN"


class StatusPage:
    """An address and token for a boss's status page, checked free now."""

    def __init__(self, address: str):
        host, _, port = address.rpartition(":")
        host = host or PAGE_HOST
        if not port.isdigit():
            raise ValueError(f"the status page wants PORT or HOST:PORT, not {address!r}")
        self.host, self.port = host, _bindable(host, int(port))
        self.token = secrets.token_urlsafe(18)

    @property
    def address(self) -> str:
        """What the boss's --http takes."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/?token={self.token}"

    def environ(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """The environment of the boss that serves this page."""
        return dict(os.environ if base is None else base, **{TOKEN_ENV: self.token})

    def announce(self) -> None:
        print(f"taylorism-zmq: status page at {self.url}", file=sys.stderr, flush=True)


def page_setting(http: bool | int | str | None) -> StatusPage | None:
    """The page a client's own boss serves: *http* (True: a free port; a port; "HOST:PORT"), else
    ``TAYLORISM_HTTP`` (a port or HOST:PORT); None for no page."""
    if http is None:
        http = os.environ.get("TAYLORISM_HTTP", "").strip() or None
    if http is None or http is False:
        return None
    if http is True:
        return StatusPage(f"{PAGE_HOST}:0")
    return StatusPage(str(http))


def _bindable(host: str, port: int) -> int:
    """*port* (a free one for 0) if the page can be served there now, else a clear error."""
    try:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
            return int(probe.getsockname()[1])
    except OSError as exc:
        raise OSError(f"cannot serve the status page at {host}:{port}: {exc.strerror or exc}") from None
