"""Socket options shared by the daemons and the client, each with its reason; binding; endpoints."""

from __future__ import annotations

import re
import socket

import zmq

from . import protocol

#: ZMTP heartbeats: the only way to notice a peer whose TCP connection hangs
HEARTBEAT_IVL_MS = 1000
HEARTBEAT_TIMEOUT_MS = 5000
#: messages libzmq may queue per peer, by socket (never 0 = unbounded): past them a send meets back-pressure
#: (zmq.Again with NOBLOCK), and the sender applies its policy for that kind of message (boss/outbox.py for
#: the boss, agent/sender.py for agents); receive queues are bounded the same way.  libzmq counts messages,
#: not bytes: the boss lets it hold few for each peer (a peer that reads nothing holds at most these and one
#: being written, whatever their size; 64 STATUS answers of 1 MiB each for every connection that never read
#: them grew a boss by 264 MiB for four of them), and keeps the rest in its outbox, where bytes are counted
BOSS_SNDHWM = 4
BOSS_RCVHWM = 1000
CONNECTED_SNDHWM = 1000
CONNECTED_RCVHWM = 1000
#: report batches in flight on an agent's PUSH: few, as each may be as large as a frame
REPORT_SNDHWM = 8
#: what the boss reads of a frame beyond its cap (--max-frame-mb), to refuse it with the reason and count it
FRAME_SLACK = 1 << 20
#: what a daemon or client accepts in one frame from a boss: the boss's own cap (it never accepts more than
#: protocol.MAX_FRAME) plus room for what the boss adds to a forwarded payload (names, hosts, the job's env)
DOWNLINK_SLACK = 16 << 20


class EndpointInUseError(OSError):
    """Another process already serves this endpoint."""


def check_bindable(endpoint: str) -> None:
    """Refuse to bind an ipc path someone serves (libzmq would silently steal it)."""
    if not endpoint.startswith("ipc://"):
        return
    path = endpoint[len("ipc://"):]
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        return  # nobody listens: a stale file or no file
    finally:
        probe.close()
    raise EndpointInUseError(f"{endpoint} is already in use by another process")


def bind(sock: zmq.Socket, endpoint: str) -> None:
    """Bind with a clear error for a port in use."""
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as exc:
        if exc.errno == zmq.EADDRINUSE:
            raise EndpointInUseError(f"{endpoint} is already in use by another process") from None
        raise


def configure_bound(sock: zmq.Socket, max_frame: int, handshake_timeout: float = 5.0) -> None:
    """Options for the boss's bound sockets: bounded frames and queues, handshakes bounded in time (a silent
    connection holds a descriptor until then: libzmq's default is 30 s), no hang at close."""
    sock.linger = 0
    sock.handshake_ivl = int(handshake_timeout * 1000)
    copy_every_frame(sock)
    # (a frame a little over the cap is read, refused with the reason and counted: boss/daemon.py; libzmq cuts
    # a connection whose frame is over this, in silence)
    sock.maxmsgsize = max_frame + FRAME_SLACK
    sock.sndhwm = BOSS_SNDHWM
    sock.rcvhwm = BOSS_RCVHWM
    sock.heartbeat_ivl = HEARTBEAT_IVL_MS
    sock.heartbeat_timeout = HEARTBEAT_TIMEOUT_MS
    sock.tcp_keepalive = 1


def copy_every_frame(sock: zmq.Socket) -> None:
    """Send every frame copied, however large: pyzmq sends a frame above its copy_threshold (64 KiB) without a
    copy, and the frame's release then goes through its garbage-collector thread (one more thread woken, and
    the GIL taken, per message), where a copy of 100 KB costs a few microseconds."""
    sock.copy_threshold = (1 << 31) - 1


def configure_connected(sock: zmq.Socket, linger_ms: int = 2000, max_frame: int = protocol.MAX_FRAME) -> None:
    """Options for agents' and clients' sockets: backoff, heartbeats, bounded linger, frames and queues."""
    copy_every_frame(sock)
    sock.linger = linger_ms
    sock.reconnect_ivl_max = 5000
    sock.heartbeat_ivl = HEARTBEAT_IVL_MS
    sock.heartbeat_timeout = HEARTBEAT_TIMEOUT_MS
    sock.rcvhwm = CONNECTED_RCVHWM
    sock.sndhwm = REPORT_SNDHWM if sock.type == zmq.PUSH else CONNECTED_SNDHWM
    if sock.type == zmq.PUSH:
        sock.immediate = 1  # nothing queued for a boss that is not there: the sender keeps it (and spills it)
    else:
        sock.maxmsgsize = max_frame + DOWNLINK_SLACK
    sock.tcp_keepalive = 1


def disconnect(sock: zmq.Socket, endpoint: str) -> None:
    """Disconnect *sock* from *endpoint*, which libzmq may have forgotten already (after a refused handshake):
    no error then."""
    try:
        sock.disconnect(endpoint)
    except zmq.ZMQError:
        pass


def report_endpoint_for(advertised: str, control: str) -> str:
    """The report endpoint to connect to, from the one the boss advertises and the control endpoint we use.

    A boss bound on a wildcard address (``tcp://*:P``, ``0.0.0.0``, ``::``) is reached at the host the agent
    already reaches its control port on.
    """
    if not advertised.startswith("tcp://") or not control.startswith("tcp://"):
        return advertised
    host, _, port = advertised[len("tcp://"):].rpartition(":")
    if host.strip("[]") not in ("*", "0.0.0.0", "::", ""):
        return advertised
    control_host = control[len("tcp://"):].rpartition(":")[0]
    return f"tcp://{control_host}:{port}"


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


def check_endpoint(endpoint: object, what: str, connect: bool = False) -> str:
    """*endpoint* if it is a tcp://HOST:PORT or ipc:///PATH endpoint (to bind, or with *connect* to connect
    to: a port from 1), else a ValueError saying where it came from and what was probably meant."""
    problem = endpoint_problem(endpoint, connect)
    if problem is None:
        assert isinstance(endpoint, str)
        return endpoint
    text = endpoint if isinstance(endpoint, str) else repr(endpoint)
    raise ValueError(f"{what} {text!r} is not an endpoint: {problem}")


def resolve_problem(endpoint: str) -> str | None:
    """Why the host of a tcp endpoint to connect to cannot be resolved, or None (ipc: never a problem): said
    at once, where a connection would retry in silence until its timeout."""
    if not endpoint.startswith("tcp://"):
        return None
    host, port = split_tcp(endpoint)
    try:
        socket.getaddrinfo(host, int(port) if port.isdigit() else None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, socket.gaierror) and exc.strerror else str(exc)
        return f"the host name {host!r} does not resolve ({reason})"
    return None


def default_reports_endpoint(control: str) -> str:
    """The report endpoint a boss binds beside its control endpoint unless told another (port + 1, or -reports)."""
    if control.startswith("tcp://"):
        host, _, port = control[len("tcp://"):].rpartition(":")
        if not port.isdigit():
            raise ValueError(f"a tcp endpoint needs a port: {control}")
        return f"tcp://{host}:{int(port) + 1}"
    if control.startswith("ipc://"):
        return control + "-reports"
    raise ValueError(f"unsupported endpoint {control!r} (use tcp://host:port or ipc:///path)")
