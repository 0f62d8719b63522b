"""Endpoints as the commands and programs take them: ``tcp://HOST:PORT`` or ``ipc:///PATH``, checked at once
(scheme, port range, a host name that resolves) so that a typo is one clear line, not a timeout."""

from __future__ import annotations

import re
import socket

#: a scheme written with the wrong number of slashes or colons (tcp:/h:1, tcp:h:1, tcp:///h:1, ipc:/p)
_MANGLED = re.compile(r"^(tcp|ipc)\s*:/*(.*)$", re.IGNORECASE)


def split_tcp(endpoint: str) -> tuple[str, str]:
    """HOST and PORT of ``tcp://HOST:PORT`` (PORT empty when there is none; HOST without IPv6 brackets)."""
    rest = endpoint[len("tcp://"):]
    if rest.startswith("["):  # tcp://[::1]:5555
        host, _, after = rest[1:].partition("]")
        return host, after[1:] if after.startswith(":") else ""
    host, colon, port = rest.rpartition(":")
    return (host, port) if colon else (rest, "")


def suggestion(text: str) -> str | None:
    """What was probably meant by a malformed endpoint, or None."""
    mangled = _MANGLED.match(text)
    if mangled:
        scheme, rest = mangled.group(1).lower(), mangled.group(2)
        if scheme == "ipc":
            return f"ipc:///{rest.lstrip('/')}" if rest else None
        rest = rest.lstrip("/")
        return f"tcp://{rest}" if rest and f"tcp://{rest}" != text else None
    if "://" not in text and ":" in text:
        return f"tcp://{text}"
    return None


def endpoint_problem(endpoint: object, connect: bool = False) -> str | None:
    """Why *endpoint* is no endpoint (to bind, or with *connect* to connect to), or None if it is one."""
    if not isinstance(endpoint, str):
        return "use tcp://HOST:PORT or ipc:///PATH"
    if endpoint.startswith("ipc://"):
        return None if len(endpoint) > len("ipc://") else "an ipc endpoint needs a path: ipc:///PATH"
    if not endpoint.startswith("tcp://"):
        hint = suggestion(endpoint)
        return "use tcp://HOST:PORT or ipc:///PATH" + (f" (did you mean {hint}?)" if hint else "")
    host, port = split_tcp(endpoint)
    if not host:
        return "a tcp endpoint needs a host: tcp://HOST:PORT"
    if port == "*" and not connect:
        return None
    if not port.isdigit():
        return "use tcp://HOST:PORT or ipc:///PATH" + ("" if port else " (the port is missing)")
    low = 1 if connect else 0
    if not low <= int(port) <= 65535:
        return f"port {port} is out of range ({low} to 65535)"
    if connect and host == "*":
        return "connect to a host name or address, not *"
    return None


def resolve_problem(endpoint: str) -> str | None:
    """Why the host of a tcp endpoint to connect to cannot be resolved, or None (ipc: never a problem)."""
    if not endpoint.startswith("tcp://"):
        return None
    host, port = split_tcp(endpoint)
    try:
        socket.getaddrinfo(host, int(port) if port.isdigit() else None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, socket.gaierror) and exc.strerror else str(exc)
        return f"the host name {host!r} does not resolve ({reason})"
    return None
