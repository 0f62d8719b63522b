"""What a launcher of the zygote does once, before any task: take on its job's code environment.

The client's environment variables (before any of its modules is imported), its ``sys.path`` and working
directory, the ``taylorism`` alias if the job asks for it, and the job's setup callable: the run-time setup of
the client, replayed here (a fork of the client has all of that already).
"""

from __future__ import annotations

import os
import pickle
import sys
from typing import Any

from ..wire.codec import resolve_ref
from . import environ


def prepare(env: dict[str, Any], host: str) -> BaseException | None:
    """Make this process's state the job's; the error of its setup callable, if that failed (every task then
    reports it)."""
    client_environ = env.get("environ")
    if isinstance(client_environ, dict):
        environ.apply(environ.task_environ(client_environ, os.environ, env.get("keep_env", ())))
    os.environ["TAYLORISM_HOST"] = host  # tasks may want to know where they run
    path = [p for p in env.get("path", []) if isinstance(p, str)]
    sys.path[:0] = [p for p in path if p not in sys.path]
    cwd = env.get("cwd")
    if isinstance(cwd, str) and os.path.isdir(cwd):
        os.chdir(cwd)
    if env.get("alias_taylorism") is True:
        from ..alias import install_as_taylorism

        install_as_taylorism()
    return run_setup(env, host)


def run_setup(env: dict[str, Any], host: str) -> BaseException | None:
    """Run the job's setup callable, if it has one; its error, as the job's tasks report it."""
    setup = env.get("setup")
    if setup is None:
        return None
    try:
        if isinstance(setup, bytes):
            if not env.get("trusted"):
                raise ValueError("a setup callable by value is refused on an untrusted link")
            function = pickle.loads(setup)
        else:
            function = resolve_ref(str(setup))
        function()
    except BaseException as exc:
        error = RuntimeError(f"the job's setup {setup if isinstance(setup, str) else ''} failed on host {host}: "
                             f"{type(exc).__name__}: {exc}")
        error.__traceback__ = exc.__traceback__
        return error
    return None
