"""The environment of a job's tasks on an agent: the client's at submission, but for what belongs to the host.

taylorism's tasks are forks of the caller and see its environment as it was when the job started; on an agent
the client's variables travel with the job and are set in its launcher (so before its modules are imported,
for libraries that read them then).  A few name the host rather than the program — its name, display,
temporary directory, the Slurm allocation the agent runs in, the daemon's own settings — and keep the host's
values; an operator adds names with ``taylorism-agent --keep-env``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

#: variables that keep the host's value (a trailing * matches a prefix)
HOST_VARIABLES = ("HOSTNAME", "HOST", "SHLVL", "PWD", "OLDPWD", "_", "DISPLAY", "XAUTHORITY", "XDG_RUNTIME_DIR",
                  "TMPDIR", "SSH_*", "SLURM_*", "PMI_*", "OMPI_*", "TAYLORISM_*")


def is_host_variable(name: str, keep: Iterable[str] = ()) -> bool:
    return any(name.startswith(pattern[:-1]) if pattern.endswith("*") else name == pattern
               for pattern in (*HOST_VARIABLES, *keep))


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
