"""CURVE keys and authentication for tcp endpoints (ipc endpoints rely on a 0700 directory).

Layout of the key directory (``TAYLORISM_KEY_DIR``, default ``~/.taylorism``,
mode 0700), like SSH's:

- ``id.key`` / ``id.key_secret``: this user's key pair (``taylorism-ctl keygen``);
- ``authorized/NAME.key``: the public keys a boss accepts, with their roles and Unix
  user (:mod:`.keystore`);
- ``boss.key``: the public key of the boss to talk to (default: ``id.key``, for the
  usual case where one user runs boss, agents and clients with a shared $HOME);
- ``boss.key_secret``: a boss's own key pair, when it has one (``taylorism-ctl keygen
  --boss``): then agents, which hold only their ``id.key_secret``, never hold the boss's.

A boss runs a ZAP authenticator in its own context before it binds, so only
authorized keys get in (CURVE without ZAP would accept any key), and zmq's
``User-Id`` of each message is the sender's public key.
"""

from __future__ import annotations

import getpass
import ipaddress
import logging
import os
import socket
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth

from .keystore import ROLES, Identity, KeysError, KeyStore, check_mode, write_key_file
from .zap import OK, REFUSED, TRY_LATER, ZapHandler

__all__ = ["KeysError", "KeyStore", "Keys", "keygen", "load_keys", "load_boss_keys", "start_authenticator"]


log = logging.getLogger("taylorism_zmq.keys")


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
    """Write a key pair (secret file 0600); authorize its public key with every role; return the public file.

    The one-user set-up: the same user runs boss, agents and clients with a shared $HOME.
    """
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
    os.chmod(public, 0o644)
    if authorize:
        authorized = directory / "authorized"
        authorized.mkdir(mode=0o700, exist_ok=True)
        key, _ = zmq.auth.load_certificate(public)
        user = getpass.getuser()
        label = user if name == "id" else f"{user}-{name}"
        write_key_file(authorized / f"{label}@{socket.gethostname()}.key", key.decode(), set(ROLES),
                       None if os.getuid() == 0 else user)
    return public


@dataclass(frozen=True)
class Keys:
    public: bytes
    secret: bytes
    server_public: bytes


def load_keys(directory: Path | None = None) -> Keys:
    """This user's key pair and the boss's public key (``boss.key``, else ``id.key``), checked like ssh's
    StrictModes, with a clear error when missing."""
    directory = Path(directory or key_dir())
    return Keys(*_pair(directory, "id"), _public(directory, "boss.key") or _public(directory, "id.key") or b"")


def load_boss_keys(directory: Path | None = None) -> Keys:
    """The boss's key pair: ``boss.key_secret`` when there is one (a boss of its own, whose secret no agent
    holds), else this user's ``id.key_secret`` (the one-user set-up)."""
    directory = Path(directory or key_dir())
    name = "boss" if (directory / "boss.key_secret").exists() else "id"
    public, secret = _pair(directory, name)
    return Keys(public, secret, public)


def own_secret(directory: Path | None = None) -> bytes | None:
    """This user's CURVE secret key, if the key directory holds a pair fit for use (else None): a client's jobs
    derive the keys of their tasks from it, so that another process of this user can check their results."""
    directory = Path(directory or key_dir())
    if not (directory / "id.key_secret").exists():
        return None
    try:
        return _pair(directory, "id")[1]
    except KeysError:
        return None


def _pair(directory: Path, name: str) -> tuple[bytes, bytes]:
    secret_file = directory / f"{name}.key_secret"
    if not secret_file.exists():
        raise KeysError(f"no key pair in {directory} (tcp endpoints use CURVE): run `taylorism-ctl keygen`, "
                        "or use --insecure / TAYLORISM_INSECURE=1 for an unauthenticated link")
    check_mode(directory)
    check_mode(secret_file, secret=True)
    try:
        public, secret = zmq.auth.load_certificate(secret_file)
    except (OSError, ValueError) as exc:
        raise KeysError(f"cannot read {secret_file}: {exc}") from None
    if secret is None:
        raise KeysError(f"{secret_file} holds no secret key")
    return public, secret


def _public(directory: Path, file: str) -> bytes | None:
    path = directory / file
    if not path.exists():
        return None
    check_mode(path)
    try:
        return zmq.auth.load_certificate(path)[0]
    except (OSError, ValueError) as exc:
        raise KeysError(f"cannot read {path}: {exc}") from None


def secure_server(sock: zmq.Socket, keys: Keys) -> None:
    sock.curve_secretkey = keys.secret
    sock.curve_publickey = keys.public
    sock.curve_server = True


def secure_client(sock: zmq.Socket, keys: Keys) -> None:
    sock.curve_secretkey = keys.secret
    sock.curve_publickey = keys.public
    sock.curve_serverkey = keys.server_public


def start_authenticator(ctx: zmq.Context, store: KeyStore, refused: Callable[[str], None] = lambda key: None,
                        busy: Callable[[Identity], str | None] = lambda who: None) -> ZapHandler:
    """Accept only the keys of *store* (call before binding); *refused* is called with each key turned away,
    *busy* says why a known key is turned away for now (its connections, the boss's: None lets it in).

    zmq's ``User-Id`` of every message is then the sender's z85 public key.
    """
    def decide(domain: str, address: str, key: str) -> tuple[bytes, str, str]:
        who = store.lookup(key)
        if who is None:
            refused(key)
            return REFUSED, "key not authorized", ""
        why = busy(who)
        if why is not None:
            return TRY_LATER, why, ""
        return OK, "OK", key

    return ZapHandler(ctx, decide)
