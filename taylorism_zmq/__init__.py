"""taylorism-zmq: taylorism's Boss/Worker API, run by a boss and agents over ZeroMQ.

Existing taylorism programs change their import only::

    from taylorism_zmq import batch_main, examples
"""

from . import schedulers, util
from .alias import install_as_taylorism
from .client import Boss, LocalCluster, batch_main, cluster_status, run_as_server, taylorism_log
from .errors import (
    AccessDeniedError,
    AgentLostError,
    BossUnreachableError,
    JobCancelledError,
    KeyRefusedError,
    RemoteTraceback,
    TaskDiedError,
    UnverifiedReportError,
    WorkerError,
)
from .schedulers import BaseScheduler, MaxThreadsScheduler, binding_setup
from .wire import security
from .worker import BindedWorker, Worker

__version__ = "0.2.0"

__all__ = [
    "AccessDeniedError", "AgentLostError", "BaseScheduler", "BindedWorker", "Boss", "BossUnreachableError",
    "JobCancelledError", "KeyRefusedError", "LocalCluster", "MaxThreadsScheduler", "RemoteTraceback",
    "TaskDiedError", "UnverifiedReportError", "Worker", "WorkerError", "batch_main", "binding_setup",
    "cluster_status", "install_as_taylorism", "run_as_server", "schedulers", "security", "taylorism_log", "util",
]


def __getattr__(name: str) -> object:
    if name == "examples":  # imported lazily: it defines footprints worker classes
        import importlib

        return importlib.import_module(".examples", __name__)
    raise AttributeError(name)
