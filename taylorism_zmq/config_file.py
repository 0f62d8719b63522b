"""The config file of the commands and of the programs alike: where it is, reading it.

``--config`` (commands), else ``TAYLORISM_CONFIG``, else ``~/.config/taylorism/config.toml``, else
``/etc/taylorism/config.toml``: the first that exists.  The commands read their own table of it
(:mod:`.command_settings`), the programs the ``[client]`` table (:mod:`.client_settings`).
"""

from __future__ import annotations

import os
import sys
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

#: where programs and commands look for the config file after ``--config`` (commands) and ``TAYLORISM_CONFIG``;
#: the first file that exists is the one read
CONFIG_PLACES = (os.path.join("~", ".config", "taylorism", "config.toml"), "/etc/taylorism/config.toml")


def parse_bool(text: str) -> bool | None:
    """A yes/no setting as the commands and programs spell it (1/0, true/false, yes/no, on/off; empty is no);
    None if it is none of those."""
    text = text.strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    return None


def config_places(explicit: str | None = None) -> list[str]:
    """Where the config file is looked for, in order."""
    return [c for c in (explicit, os.environ.get("TAYLORISM_CONFIG"), *CONFIG_PLACES) if c]


def find_config(explicit: str | None = None) -> str | None:
    """The config file in effect, for the commands and the programs alike: *explicit* (which must exist), else
    the first of ``TAYLORISM_CONFIG``, ``~/.config/taylorism/config.toml``, ``/etc/taylorism/config.toml``
    that exists; None if none does."""
    for candidate in config_places(explicit):
        path = os.path.expanduser(candidate)
        if os.path.isfile(path):
            return path
    if explicit:
        raise ValueError(f"config file {explicit} not found")
    return None


def load_config(path: str | None = None) -> dict[str, Any]:
    """Read a TOML config file: *path*, else the one in effect (see :func:`find_config`); none: empty."""
    path = os.path.expanduser(path) if path else find_config()
    if path is None:
        return {}
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ValueError(f"cannot read the taylorism config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"bad taylorism config file {path}: {exc}") from None
