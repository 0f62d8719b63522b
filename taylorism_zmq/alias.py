"""Make ``import taylorism`` resolve to taylorism-zmq, for libraries built on taylorism.

Libraries such as epygram or Vortex say ``import taylorism`` and subclass
``taylorism.Worker``; their users cannot edit them.  Call
:func:`install_as_taylorism` before such a library is imported (or run the
program with ``python -m taylorism_zmq.run``), and every ``taylorism`` name
they use is taylorism-zmq's.  The alias travels with each job: task processes
on every agent install it before they import the job's worker classes,
whether or not the real taylorism is installed there.  Without it, nothing
changes.
"""

from __future__ import annotations

import sys

#: the taylorism modules and their taylorism-zmq stand-ins
ALIASES = {
    "taylorism": "taylorism_zmq",
    "taylorism.schedulers": "taylorism_zmq.schedulers",
    "taylorism.util": "taylorism_zmq.util",
    "taylorism.examples": "taylorism_zmq.examples",
}


def install_as_taylorism() -> None:
    """Let ``import taylorism`` (and its submodules) give taylorism-zmq in this process."""
    import importlib

    import taylorism_zmq

    current = sys.modules.get("taylorism")
    if current is not None and current is not taylorism_zmq:
        raise RuntimeError(
            "the real taylorism is imported already: call install_as_taylorism() before anything imports "
            "taylorism (or start the program with python -m taylorism_zmq.run)")
    for alias, target in ALIASES.items():
        sys.modules[alias] = importlib.import_module(target)


def alias_installed() -> bool:
    """True when ``import taylorism`` gives taylorism-zmq in this process."""
    import taylorism_zmq

    return sys.modules.get("taylorism") is taylorism_zmq
