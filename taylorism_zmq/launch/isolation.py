"""What a launcher gives up before any user code runs: the daemon's secrets, and root.

Every launcher drops the variables that lead to the agent's keys from its environment (its tasks inherit
it).  A launcher of an agent run as root with ``--run-as-client-user`` also becomes the Unix user mapped to
the job owner's key (``taylorism-ctl authorize --user``): groups, gid, then uid, never uid 0, and
``PR_SET_NO_NEW_PRIVS`` so that no task gets root back through a set-user-ID program.  Without that, tasks
run as the agent's user and can read whatever it can, its key files included: a shared agent is shared
trust (per-user agents, as the Slurm scripts start, avoid it).
"""

from __future__ import annotations

import ctypes
import os
import pwd

from .environ import is_daemon_secret

_PR_SET_NO_NEW_PRIVS = 38


class IsolationError(RuntimeError):
    """A launcher cannot become the user its job asks for."""


def scrub_environment(environ: os._Environ | dict = os.environ) -> None:
    """Remove the agent's key directory and any other daemon secret from the environment tasks inherit (the
    zygote starts without them: this holds for variables a job's setup or a fork of the client sets)."""
    for name in list(environ):
        if is_daemon_secret(name):
            del environ[name]


def resolve_user(name: str) -> pwd.struct_passwd:
    """The account a job's tasks run as; refused when unknown or root."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise IsolationError(f"no Unix user {name!r} on this host (the key's --user mapping)") from None
    if entry.pw_uid == 0 or entry.pw_gid == 0:
        raise IsolationError(f"tasks never run as root (user {name!r} has uid or gid 0)")
    return entry


def user_problem(user: str | None) -> str | None:
    """Why the tasks of a job whose owner's key maps to *user* cannot run as that user here, if they cannot
    (asked by an agent run with --run-as-client-user, before it starts a launcher)."""
    if user is None:
        return ("the job's owner key maps to no Unix user, and this agent runs each client's tasks as the "
                "client's user: ask the boss's operator to run `taylorism-ctl authorize --user USER ...`")
    try:
        resolve_user(user)
    except IsolationError as exc:
        return str(exc)
    return None


def become(name: str) -> None:
    """Turn this (root) process into user *name* for good, with no way back to more privileges."""
    entry = resolve_user(name)
    os.initgroups(entry.pw_name, entry.pw_gid)
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
    if os.getuid() == 0 or os.geteuid() == 0:  # pragma: no cover - setuid would have raised
        raise IsolationError("could not leave root")
    libc = ctypes.CDLL(None, use_errno=True)  # the process's own symbols (find_library would run ldconfig)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise IsolationError(f"prctl(PR_SET_NO_NEW_PRIVS) failed: {os.strerror(ctypes.get_errno())}")
    os.environ.update(HOME=entry.pw_dir, USER=entry.pw_name, LOGNAME=entry.pw_name)


def enter(env: dict) -> None:
    """Called first thing in a launcher: no daemon secrets, and the job owner's user when the agent says so."""
    scrub_environment()
    user = env.get("run_as")
    if user is not None:
        become(str(user))
