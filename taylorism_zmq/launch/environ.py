"""The environment of a job's tasks on an agent: the client's at submission, but for what belongs to the host.

taylorism's tasks are forks of the caller and see its environment as it was when the job started; on an agent
the client's variables travel with the job and are set in its launcher (so before its modules are imported,
for libraries that read them then).  A few name the host rather than the program — its name, display,
temporary directory, the Slurm allocation the agent runs in, the daemon's own settings — and keep the host's
values; an operator adds names with ``taylorism-agent --keep-env``.

A launcher of an agent starts from none of the agent's own variables: its zygote is a fresh exec of Python
whose environment (:func:`zygote_environ`) holds only the host's variables and what that Python needs to
start, never a daemon's secret; ``/proc/self/environ`` of every launcher and task (the block a process was
exec'd with, which ``os.environ`` does not change) shows that, not the agent's.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

#: variables that keep the host's value (a trailing * matches a prefix)
HOST_VARIABLES = ("HOSTNAME", "HOST", "SHLVL", "PWD", "OLDPWD", "_", "DISPLAY", "XAUTHORITY", "XDG_RUNTIME_DIR",
                  "TMPDIR", "SSH_*", "SLURM_*", "PMI_*", "OMPI_*", "TAYLORISM_*")
#: what the agent's Python needs to start again (its zygote is a fresh exec of it), its user and locale: the
#: rest of a launcher's environment before it takes on its job's
RUNTIME_VARIABLES = ("PATH", "LD_LIBRARY_PATH", "PYTHONPATH", "PYTHONHOME", "PYTHONNOUSERSITE", "VIRTUAL_ENV",
                     "CONDA_PREFIX", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "LC_*", "TZ")
#: words that make a TAYLORISM_ variable a daemon's secret (TAYLORISM_KEY_DIR, a token)
_SECRET_WORDS = ("KEY", "SECRET", "TOKEN")


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(name.startswith(pattern[:-1]) if pattern.endswith("*") else name == pattern for pattern in patterns)


def is_host_variable(name: str, keep: Iterable[str] = ()) -> bool:
    return _matches(name, (*HOST_VARIABLES, *keep))


def is_daemon_secret(name: str) -> bool:
    """A variable that leads to a daemon's keys or holds a token of its: never passed on to tasks."""
    return name.startswith("TAYLORISM_") and any(word in name for word in _SECRET_WORDS)


def zygote_environ(agent: Mapping[str, str], keep: Iterable[str] = ()) -> dict[str, str]:
    """The environment an agent's zygote (and so every launcher and task of it) is exec'd with: the host's
    variables (with those of --keep-env) and those its Python needs, never a daemon's secret, nothing else."""
    keep = tuple(keep)
    return {name: value for name, value in agent.items()
            if (is_host_variable(name, keep) or _matches(name, RUNTIME_VARIABLES)) and not is_daemon_secret(name)}


def task_environ(client: Mapping[str, str], host: Mapping[str, str], keep: Iterable[str] = ()) -> dict[str, str]:
    """The client's variables, but the host's for those that belong to the host."""
    keep = tuple(keep)
    merged = {k: v for k, v in client.items() if not is_host_variable(k, keep)}
    merged.update((k, v) for k, v in host.items() if is_host_variable(k, keep))
    return merged


def apply(environ: Mapping[str, str]) -> None:
    """Make *environ* this process's environment (and its children's)."""
    for name in [n for n in os.environ if n not in environ]:
        del os.environ[name]
    for name, value in environ.items():
        if os.environ.get(name) != value:
            os.environ[name] = value
