"""The client: taylorism's API (:mod:`.api`, :mod:`.proxy`) over one connection to a boss (:mod:`.connection`),
an embedded boss and agent when none is configured (:mod:`.embedded`)."""

from .api import batch_main, run_as_server
from .proxy import Boss, taylorism_log

__all__ = ["Boss", "batch_main", "run_as_server", "taylorism_log"]
