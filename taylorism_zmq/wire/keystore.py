"""The boss's authorized keys: who may connect, under which name, with which roles, as which Unix user.

One file per key in ``<key dir>/authorized/``, ``NAME.key``, in zmq's certificate format (so a user's
``id.key`` copied there works as it is) with two optional metadata lines::

    metadata
        roles = client,agent,admin
        user = alice
    curve
        public-key = "..."

A key with no ``roles`` line is a client only, except the boss's own key (the one-user set-up, where
everyone's key is the boss's ``id.key``), which has every role.  Files are checked like ssh's StrictModes: the directory
and the files may not be writable by group or others, nor owned by another user than this one or root.
:class:`KeyStore` reloads the directory in a thread of its own (at most once a second), so the boss's loop
never waits on the disk and a revoked key is refused from its next message on.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import logging
import os
import re
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

import zmq.auth
from zmq.utils import z85

log = logging.getLogger("taylorism_zmq.keys")

#: boss: the other boss of a pair (its state stream, its handover); no operator key needs it
ROLES = ("client", "agent", "admin", "boss")
#: names of keys: file names in authorized/, shown in logs and status
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
#: seconds between two looks at the authorized directory
RELOAD_EVERY = 1.0


class KeysError(Exception):
    """Missing, unreadable or unsafe keys (named so as not to shadow the builtin)."""


@dataclass(frozen=True, slots=True)
class Identity:
    """Who sent a message: the peer's key as the handshake proved it, and what the key store says of it."""

    #: z85 public key (zmq's User-Id), or a pseudo key for links without CURVE
    key: str
    name: str
    roles: frozenset[str]
    #: the Unix user the key maps to (a root agent started with --run-as-client-user runs its tasks as it)
    user: str | None = None

    def can(self, role: str) -> bool:
        return role in self.roles

    @property
    def label(self) -> str:
        """Name and fingerprint, for logs."""
        return self.name if self.key in ("local", "anonymous") else f"{self.name} ({fingerprint(self.key)})"

    @property
    def key_id(self) -> str:
        """The key's fingerprint: what agents keep with each task as its job's owner (not a secret)."""
        return fingerprint(self.key)


#: the peers of an ipc boss (a 0700 directory: only its owner can connect) and of an --insecure one
LOCAL = Identity("local", "local", frozenset(ROLES), None)
ANONYMOUS = Identity("anonymous", "anonymous", frozenset(ROLES), None)


@functools.lru_cache(maxsize=4096)
def fingerprint(key: str | bytes) -> str:
    """A short, stable name for a public key (what logs show of a key the boss does not know; the key id agents
    keep with each task, compared for each report: remembered for the keys seen lately)."""
    raw = key.encode() if isinstance(key, str) else key
    return "SHA256:" + hashlib.sha256(raw).hexdigest()[:16]


def check_mode(path: Path, secret: bool = False) -> None:
    """Refuse a key file or directory others could change (or read, for a secret), as ssh's StrictModes."""
    try:
        st = path.stat()
    except OSError as exc:
        raise KeysError(f"cannot read {path}: {exc.strerror}") from None
    check_stat(path, st, secret)


def check_stat(path: Path, st: os.stat_result, secret: bool = False) -> None:
    """:func:`check_mode` of what *path* was found to be (*st*)."""
    if st.st_uid not in (os.getuid(), 0):
        raise KeysError(f"{path} belongs to uid {st.st_uid}, not to this user: chown it, or use a key "
                        "directory of your own")
    if secret and st.st_mode & 0o077:
        raise KeysError(f"{path} is readable by others (mode {stat.S_IMODE(st.st_mode):o}): chmod 600 {path}")
    if st.st_mode & 0o022:
        raise KeysError(f"{path} is writable by group or others (mode {stat.S_IMODE(st.st_mode):o}): "
                        f"chmod go-w {path}")


def parse_roles(text: str) -> frozenset[str]:
    roles = frozenset(r.strip() for r in text.replace(" ", ",").split(",") if r.strip())
    unknown = roles - set(ROLES)
    if unknown:
        raise KeysError(f"unknown role(s) {', '.join(sorted(unknown))}: roles are {', '.join(ROLES)}")
    return roles


#: the most a key file may take (a file planted there to fill the boss's memory is refused)
MAX_KEY_FILE = 64 << 10


class KeyFileUnreadable(KeysError):
    """A key file that could not be read just now (no descriptor left, say): it may be fine the next time."""


def read_key_file(path: Path, owner: str | None = None) -> Identity:
    """An authorized key file: its public key, name (the file's), roles and Unix user (a file with no roles:
    a client, or every role for the boss's own key *owner*).  A symbolic link is not followed."""
    return _read_key(path, owner)[0]


def _read_key(path: Path, owner: str | None) -> tuple[Identity, os.stat_result]:
    """:func:`read_key_file`, and what the file was found to be."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise KeysError(f"{path} is a symbolic link: not followed (copy the key file there)") from None
        if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EINTR):
            raise KeyFileUnreadable(f"cannot read {path} now: {exc.strerror}") from None
        raise KeysError(f"cannot read {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeysError(f"{path} is not a regular file")
        check_stat(path, st)
        data = os.read(fd, MAX_KEY_FILE + 1)
    except OSError as exc:
        raise KeyFileUnreadable(f"cannot read {path} now: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_KEY_FILE:
        raise KeysError(f"{path}: not a public key file (more than {MAX_KEY_FILE} bytes)")
    text = data.decode("utf-8", errors="replace")
    public = _public_key(text)
    if public is None:
        raise KeysError(f"{path}: not a public key file (no valid public-key line)")
    meta: dict[str, str] = {}
    section = ""
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line[0].isspace():
            section = line.strip()
            continue
        if section == "metadata" and "=" in line:
            k, _, v = line.partition("=")
            meta[k.strip()] = v.strip().strip("'\"")
    key = public
    if "roles" in meta:
        roles = parse_roles(meta["roles"])
    else:
        roles = frozenset(ROLES) if key == owner else frozenset({"client"})
    user = meta.get("user") or None
    return Identity(key, path.stem, roles, user), st


def _public_key(text: str) -> str | None:
    """The z85 public key of a certificate's text (as zmq.auth.load_certificate reads it), if a valid one."""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("public-key"):
            value = line.partition("=")[2].strip(" \t'\"")
            try:
                if len(value) == 40 and len(z85.decode(value)) == 32:
                    return value
            except (ValueError, KeyError, UnicodeEncodeError):
                pass
            return None
    return None


def write_key_file(path: Path, public: str, roles: frozenset[str] | set[str], user: str | None) -> None:
    """Write an authorized key file (0644 in a 0700 directory; readable, not writable, by others)."""
    lines = [f"#   taylorism-zmq authorized key {path.stem}", "metadata",
             f"    roles = {','.join(r for r in ROLES if r in roles)}"]
    if user:
        lines.append(f"    user = {user}")
    lines += ["curve", f'    public-key = "{public}"', ""]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("\n".join(lines), encoding="utf-8")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def load_authorized(directory: Path, owner: str | None = None) -> tuple[dict[str, Identity], list[str]]:
    """Every usable key in *directory* by z85 public key, and the problems of the files that are not
    (*owner*: the boss's own public key)."""
    keys, problems, _files, _unreadable = _load(directory, owner)
    return keys, problems


def _load(directory: Path, owner: str | None) -> tuple[dict[str, Identity], list[str], dict[str, tuple], bool]:
    """:func:`load_authorized`, with what each key's file was found to be (its :func:`_file_signature`) and
    whether a file could not be read just now."""
    check_mode(directory)
    keys: dict[str, Identity] = {}
    problems: list[str] = []
    files: dict[str, tuple] = {}
    unreadable = False
    for path in sorted(directory.glob("*.key")):
        try:
            ident, st = _read_key(path, owner)
        except KeyFileUnreadable as exc:
            problems.append(str(exc))
            unreadable = True
            continue
        except KeysError as exc:
            problems.append(str(exc))
            continue
        if not NAME_RE.match(ident.name):
            problems.append(f"{path}: the file name is not a usable key name (letters, digits, . _ @ -)")
            continue
        if ident.key in keys:
            problems.append(f"{path}: the same key as {keys[ident.key].name}.key (the first one counts)")
            continue
        keys[ident.key] = ident
        files[ident.key] = _file_signature(st)
    return keys, problems, files, unreadable


def _file_signature(st: os.stat_result) -> tuple:
    """What a key file is found to be: any change to it (or another file in its place) changes this."""
    return (st.st_ino, st.st_mtime_ns, st.st_size, st.st_mode, st.st_uid)


class KeyStore:
    """The authorized keys, as of the last look at the directory (reloaded by a thread of its own)."""

    def __init__(self, directory: Path, owner: str | None = None):
        self.directory = Path(directory)
        #: the boss's own public key: a file of it with no roles line gives it every role
        self.owner = owner
        if not self.directory.is_dir():
            raise KeysError(f"no authorized keys directory {self.directory}: run `taylorism-ctl keygen` "
                            "(it authorizes its own key) or `taylorism-ctl authorize`")
        #: z85 key -> identity; replaced whole on reload, so readers in other threads need no lock
        self.keys: dict[str, Identity] = {}
        #: z85 key -> its file's signature as loaded (to tell, with no descriptor, whether it is still there)
        self._files: dict[str, tuple] = {}
        self._signature: tuple = ()
        self._told: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.reload()

    def lookup(self, key: str) -> Identity | None:
        return self.keys.get(key)

    def reload(self) -> bool:
        """Read the directory again if anything in it changed; True if it did.

        A directory that cannot be read just now (no descriptor left, say) fails closed: a key whose file is
        gone or changed since it was loaded (a revocation meanwhile) is refused from then on, which a look at
        each file by its name tells with no descriptor; no key is added until the directory can be read.
        """
        try:
            signature = self._look()
        except OSError as exc:
            self._keep_unchanged(exc)
            return False
        if signature == self._signature:
            return False
        unreadable = False
        try:
            keys, problems, files, unreadable = _load(self.directory, self.owner)
        except KeysError as exc:  # the directory itself: refuse every key until it is fixed
            keys, problems, files = {}, [f"{exc} (no key is accepted until then)"], {}
        if unreadable:  # a key loaded before whose file is unchanged stays (it could not be read again just now)
            for key, ident in self.keys.items():
                if key not in keys and self._unchanged(key, ident):
                    keys[key], files[key] = ident, self._files[key]
                    problems = [p for p in problems if f"/{ident.name}.key" not in p]
        for problem in problems:
            if problem not in self._told:
                log.error("authorized key refused: %s", problem)
        self._told = set(problems)
        if self._signature:
            gone = [i.name for k, i in self.keys.items() if k not in keys]
            log.info("authorized keys reloaded: %d key(s)%s", len(keys),
                     f"; revoked: {', '.join(gone)}" if gone else "")
        self.keys = keys
        self._files = files
        # a file that could not be read just now is read again at the next look, whether anything changed or not
        self._signature = () if unreadable else signature
        return True

    def _keep_unchanged(self, exc: OSError) -> None:
        """The directory cannot be read: keep only the keys whose file is as it was loaded (fail closed)."""
        gone = [ident.name for key, ident in self.keys.items() if not self._unchanged(key, ident)]
        if gone:
            self.keys = {k: i for k, i in self.keys.items() if i.name not in gone}
            self._signature = ()
        log.error("cannot read the authorized keys in %s: %s (keeping the keys whose file is unchanged%s)",
                  self.directory, exc.strerror or exc, f"; refused from now on: {', '.join(gone)}" if gone else "")

    def _unchanged(self, key: str, ident: Identity) -> bool:
        """Whether *ident*'s file is as it was loaded (a look by name, which takes no descriptor)."""
        try:
            return _file_signature(os.lstat(self.directory / f"{ident.name}.key")) == self._files.get(key)
        except OSError:
            return False

    def _look(self) -> tuple:
        st = self.directory.stat()
        files = []
        with os.scandir(self.directory) as entries:
            for entry in entries:
                if entry.name.endswith(".key"):
                    s = entry.stat(follow_symlinks=False)
                    files.append((entry.name, s.st_mtime_ns, s.st_size, s.st_mode, s.st_uid, s.st_ino))
        return (st.st_mtime_ns, st.st_mode, st.st_uid, tuple(sorted(files)))

    def start(self) -> None:
        """Watch the directory from a daemon thread."""
        self._thread = threading.Thread(target=self._watch, name="taylorism-keys", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _watch(self) -> None:
        while not self._stop.wait(RELOAD_EVERY):
            try:
                self.reload()
            except Exception:  # never let the watcher die: the keys known stay in force
                log.exception("reloading the authorized keys failed")


# -- taylorism-ctl authorize / revoke / keys ---------------------------------------------------------------
def authorize(directory: Path, public_file: Path, roles: frozenset[str], name: str | None = None,
              user: str | None = None) -> Path:
    """Add (or replace) a key in *directory* with *roles* and a Unix *user*; return its file."""
    try:
        public, _ = zmq.auth.load_certificate(public_file)
    except (OSError, ValueError) as exc:
        raise KeysError(f"{public_file}: not a public key file ({exc})") from None
    if not roles:
        raise KeysError("give at least one --role (client, agent, admin, boss)")
    name = name or Path(public_file).stem
    if not NAME_RE.match(name):
        raise KeysError(f"{name!r} is not a usable key name (letters, digits, . _ @ -): give one with --name")
    if user is not None and (not re.match(r"^[a-z_][a-z0-9_.-]*\$?$", user, re.I) or user == "root"):
        raise KeysError(f"{user!r} is not a Unix user name tasks may run as")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    check_mode(directory)
    key = public.decode("ascii")
    for path in directory.glob("*.key"):
        try:
            other = read_key_file(path)
        except KeysError:
            continue
        if other.key == key and path.stem != name:
            raise KeysError(f"this key is authorized already as {path.stem}: revoke it first, or use --name "
                            f"{path.stem} to change its roles")
    path = directory / f"{name}.key"
    write_key_file(path, key, roles, user)
    return path


def revoke(directory: Path, name: str) -> Path:
    """Remove key *name* from *directory* (a running boss refuses it from its next message on)."""
    path = directory / f"{name}.key"
    if not NAME_RE.match(name) or not path.is_file():
        known = ", ".join(sorted(p.stem for p in directory.glob("*.key"))) or "none"
        raise KeysError(f"no authorized key named {name!r} in {directory} (keys: {known})")
    path.unlink()
    return path


def list_keys(directory: Path) -> tuple[list[Identity], list[str]]:
    """The keys of *directory*, by name, and the problems of the files that cannot be used."""
    if not directory.is_dir():
        raise KeysError(f"no authorized keys directory {directory}")
    keys, problems = load_authorized(directory)
    return sorted(keys.values(), key=lambda i: i.name), problems
