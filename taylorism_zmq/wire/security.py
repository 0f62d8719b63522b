"""CURVE keys and authentication for tcp endpoints (ipc endpoints rely on a 0700 directory).

Layout of the key directory (``TAYLORISM_KEY_DIR``, default ``~/.taylorism``,
mode 0700), like SSH's:

- ``id.key`` / ``id.key_secret``: this user's key pair (``taylorism-ctl keygen``);
- ``authorized/*.key``: the public keys a boss accepts from clients and agents;
- ``boss.key``: the public key of the boss to talk to (default: ``id.key``, for the
  usual case where one user runs boss, agents and clients with a shared $HOME).

A boss runs a ZAP authenticator in its own context before it binds, so only
authorized keys get in (CURVE without ZAP would accept any key).
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.auth


class KeysError(Exception):
    """Missing or unreadable keys (named so as not to shadow the builtin)."""


def key_dir() -> Path:
    return Path(os.environ.get("TAYLORISM_KEY_DIR") or Path.home() / ".taylorism")


def needs_curve(endpoint: str) -> bool:
    """tcp endpoints are authenticated and encrypted unless told otherwise."""
    return endpoint.startswith("tcp://") and os.environ.get("TAYLORISM_INSECURE", "") not in ("1", "yes", "true")


def link_is_trusted(endpoint: str) -> bool:
    """True for an ipc endpoint in a directory only we can enter (pickle may go there)."""
    if not endpoint.startswith("ipc://"):
        return False
    directory = os.path.dirname(endpoint[len("ipc://"):]) or "."
    try:
        st = os.stat(directory)
    except OSError:
        return False
    return st.st_uid == os.getuid() and not st.st_mode & (stat.S_IRWXG | stat.S_IRWXO)


def is_loopback(endpoint: str) -> bool:
    host = endpoint[len("tcp://"):].rpartition(":")[0].strip("[]")
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
        except (OSError, ValueError):
            return False


def keygen(directory: Path | None = None, name: str = "id", authorize: bool = True, force: bool = False) -> Path:
    """Write a key pair (secret file 0600) and authorize its public key; return the public key file."""
    directory = Path(directory or key_dir())
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    public, secret = directory / f"{name}.key", directory / f"{name}.key_secret"
    if public.exists() and not force:
        raise FileExistsError(f"{public} exists already (use --force to replace it)")
    old = os.umask(0o077)
    try:
        zmq.auth.create_certificates(directory, name)
    finally:
        os.umask(old)
    os.chmod(secret, 0o600)  # pyzmq writes it with the process umask
    if authorize:
        authorized = directory / "authorized"
        authorized.mkdir(mode=0o700, exist_ok=True)
        shutil.copy(public, authorized / f"{name}-{socket.gethostname()}.key")
    return public


@dataclass(frozen=True)
class Keys:
    public: bytes
    secret: bytes
    server_public: bytes


def load_keys(directory: Path | None = None) -> Keys:
    """This user's key pair and the boss's public key, with a clear error when missing."""
    directory = Path(directory or key_dir())
    secret_file = directory / "id.key_secret"
    if not secret_file.exists():
        raise KeysError(f"no key pair in {directory} (tcp endpoints use CURVE): run `taylorism-ctl keygen`, "
                        "or set TAYLORISM_INSECURE=1 for an unauthenticated link")
    if secret_file.stat().st_mode & 0o077:
        raise KeysError(f"{secret_file} is readable by others: chmod 600 it")
    public, secret = zmq.auth.load_certificate(secret_file)
    server_file = directory / "boss.key"
    if not server_file.exists():
        server_file = directory / "id.key"
    server_public, _ = zmq.auth.load_certificate(server_file)
    if secret is None:
        raise KeysError(f"{secret_file} holds no secret key")
    return Keys(public, secret, server_public)


def secure_server(sock: zmq.Socket, keys: Keys) -> None:
    sock.curve_secretkey = keys.secret
    sock.curve_publickey = keys.public
    sock.curve_server = True


def secure_client(sock: zmq.Socket, keys: Keys) -> None:
    sock.curve_secretkey = keys.secret
    sock.curve_publickey = keys.public
    sock.curve_serverkey = keys.server_public


def start_authenticator(ctx: zmq.Context, directory: Path | None = None) -> Any:
    """Accept only the public keys in ``authorized/`` (call before binding)."""
    from zmq.auth.thread import ThreadAuthenticator

    authorized = Path(directory or key_dir()) / "authorized"
    if not authorized.is_dir():
        raise KeysError(f"no authorized keys directory {authorized}: run `taylorism-ctl keygen` "
                        "(it authorizes its own key) or copy public keys there")
    auth = ThreadAuthenticator(ctx)
    auth.start()
    auth.configure_curve(domain="*", location=str(authorized))
    return auth
