"""The client: taylorism's API (:mod:`.api`, :mod:`.proxy`) over one connection to a boss (:mod:`.connection`),
an embedded boss and agent when none is configured (:mod:`.embedded`), a cluster on this machine
(:mod:`.local`), the cluster's state as data (:mod:`.status`)."""

from .api import batch_main, run_as_server
from .local import LocalCluster
from .proxy import Boss, taylorism_log
from .status import cluster_status

__all__ = ["Boss", "LocalCluster", "batch_main", "cluster_status", "run_as_server", "taylorism_log"]
