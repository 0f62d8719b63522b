"""The ``TAYLORISM_*`` variables taylorism-zmq reads, and the warning about one that nothing reads (a typo,
``TAYLORISM_PROT`` for ``TAYLORISM_PORT``, would otherwise pass unnoticed): said once per process, by every
command and program, with the known name it is closest to."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable

#: variables of the programs and of the launchers (the commands' own are TAYLORISM_ + each long option's
#: name); the test suite's are TAYLORISM_TEST_*
LIBRARY_VARIABLES = frozenset({
    "TAYLORISM_BOSS", "TAYLORISM_CONFIG", "TAYLORISM_KEY_DIR", "TAYLORISM_INSECURE", "TAYLORISM_BOSS_TIMEOUT",
    "TAYLORISM_MAX_TASKS_PER_PROCESS", "TAYLORISM_HTTP", "TAYLORISM_HTTP_TOKEN", "TAYLORISM_FORK_CALLER",
    "TAYLORISM_EMBEDDED_LOG_LEVEL", "TAYLORISM_EMBEDDED_VALIDATE", "TAYLORISM_HOST", "TAYLORISM_PORT",
    "TAYLORISM_REPORTS_PORT"})
_warned = False


def known_variables() -> set[str]:
    """Every TAYLORISM_* variable some part of taylorism-zmq reads."""
    from .ctl.parser import ctl_parser  # (the parsers: their options are the commands' variables)
    from .daemon_parsers import agent_parser, boss_parser

    known = set(LIBRARY_VARIABLES)
    for parser in (boss_parser(), agent_parser(), ctl_parser()):
        for action in parser._actions:
            known.update("TAYLORISM_" + o[2:].replace("-", "_").upper() for o in action.option_strings
                         if o.startswith("--"))
    return known


def unknown_variables(environ: Iterable[str]) -> list[tuple[str, str | None]]:
    """The TAYLORISM_* names of *environ* that nothing reads, each with the known name it is closest to."""
    import difflib

    known = known_variables()
    return [(name, next(iter(difflib.get_close_matches(name, known, n=1, cutoff=0.8)), None))
            for name in sorted(environ)
            if name.startswith("TAYLORISM_") and name not in known and not name.startswith("TAYLORISM_TEST_")]


def warn_unknown_variables() -> None:
    """Say once per process which TAYLORISM_* variables nothing reads."""
    global _warned
    if _warned:
        return
    _warned = True
    if not any(name.startswith("TAYLORISM_") for name in os.environ):
        return  # (no parser built for nothing)
    for name, close in unknown_variables(os.environ):
        hint = f" (did you mean {close}?)" if close else ""
        print(f"taylorism-zmq: warning: {name} is set but is no taylorism-zmq setting{hint}; it is ignored",
              file=sys.stderr)
