"""Run a program with ``import taylorism`` resolving to taylorism-zmq.

    python -m taylorism_zmq.run script.py [args...]
    python -m taylorism_zmq.run -m package.module [args...]

For command-line tools built on taylorism that cannot be edited.
"""

from __future__ import annotations

import importlib.util
import os
import runpy
import sys

from .alias import install_as_taylorism


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        raise SystemExit(0 if argv else 2)
    if argv[0] == "-m":
        if len(argv) < 2:
            raise SystemExit("python -m taylorism_zmq.run -m: a module name is needed")
        install_as_taylorism()
        try:
            found = importlib.util.find_spec(argv[1]) is not None
        except ImportError:  # its parent package is missing
            found = False
        if not found:
            raise SystemExit(f"python -m taylorism_zmq.run: no module named {argv[1]!r}")
        sys.argv = argv[1:]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        if not os.path.isfile(argv[0]):
            raise SystemExit(f"python -m taylorism_zmq.run: {argv[0]}: no such file")
        install_as_taylorism()
        sys.argv = argv
        runpy.run_path(argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
