"""Command lines: taylorism-boss, taylorism-agent, taylorism-ctl (argparse lives only here)."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence

from . import __version__, settings
from .boss.quota import MAX_HELD_BYTES_PER_KEY, MAX_JOBS_PER_KEY
from .config import reports_endpoint
from .ctl import ctl_main, ctl_parser, format_hosts, format_jobs  # taylorism-ctl (its own package)

__all__ = ["agent_main", "agent_parser", "boss_main", "boss_parser", "ctl_main", "ctl_parser", "format_hosts",
           "format_jobs", "main"]

DEFAULT_CONTROL = "tcp://127.0.0.1:5555"
#: the boss's control endpoint when --control is left out: its port is --port's
DEFAULT_CONTROL_HOST = "tcp://127.0.0.1"
DEFAULT_PORT = 5555
#: a boss's --agent-timeout spans at least this many of its --heartbeat periods: an agent is lost after missing
#: several heartbeats, never one late one
MIN_BEATS_PER_TIMEOUT = 3.0


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--log-level", default="INFO", help="logging level (DEBUG, INFO, WARNING, ERROR)")
    parser.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--parent-fd", type=int, default=None, help=argparse.SUPPRESS)  # stop when it ends
    # a client's embedded daemons: private to it, set by its command line only (see settings.parse)
    parser.add_argument("--embedded", action="store_true", help=argparse.SUPPRESS)
    _key_dir_option(parser)
    settings.add_config_options(parser)


def _key_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--key-dir", default=None,
                        help="directory of the CURVE keys (id.key_secret, boss.key, authorized/; default "
                             "~/.taylorism)")


def _use_key_dir(args: argparse.Namespace) -> None:
    """The key directory chosen by flag, environment or config file, for every part of this process."""
    import os

    if args.key_dir:
        os.environ["TAYLORISM_KEY_DIR"] = os.path.expanduser(args.key_dir)


def _setup_logging(args: argparse.Namespace) -> None:
    settings.setup_logging(args.log_level, args.log_file, args.log_json)


def boss_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="taylorism-boss", description=(
        "Run the taylorism-zmq boss: it binds a control ROUTER (clients and agents) and a report PULL "
        "(agents' reports and heartbeats), and places the jobs' tasks on the agents' free slots."))
    _common(p)
    p.add_argument("--control", default=DEFAULT_CONTROL_HOST,
                   help="control endpoint to bind, tcp://HOST[:PORT] or ipc:///PATH; without a port, --port's "
                        f"(default {DEFAULT_CONTROL_HOST}:{DEFAULT_PORT})")
    p.add_argument("--port", type=int, default=DEFAULT_PORT,
                   help="the control port, for a --control given without one (default %(default)s; "
                        "TAYLORISM_PORT)")
    p.add_argument("--reports", default=None,
                   help="report endpoint to bind (default: the control host at --reports-port; ipc: "
                        "PATH-reports); agents learn it when they register")
    p.add_argument("--reports-port", type=int, default=None, metavar="PORT",
                   help="the report port on the control host (default: the control port + 1; 0: a free port; "
                        "TAYLORISM_REPORTS_PORT)")
    p.add_argument("--heartbeat", type=float, default=1.0,
                   help="agents' heartbeat period in s, told to each agent when it registers; agents given no "
                        "--heartbeat of their own follow it (default 1)")
    p.add_argument("--agent-timeout", type=float, default=30.0,
                   help="seconds of silence after which an agent is lost and its tasks requeued (default 30; at "
                        f"least {MIN_BEATS_PER_TIMEOUT:g} heartbeats)")
    p.add_argument("--max-retries", type=int, default=1,
                   help="times a task may be requeued because its agent was lost (default 1)")
    p.add_argument("--insecure", action="store_true",
                   help="serve tcp without CURVE authentication and encryption (then pickle is refused)")
    p.add_argument("--http", default=None, metavar="HOST:PORT",
                   help="serve a live status page there (off by default; use a loopback address and an SSH tunnel; "
                        "the URL with its token is logged at start-up, or put a token in <key dir>/http-token)")
    p.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                   help="serve Prometheus metrics on http://ADDRESS:PORT/metrics (off by default; 0 picks a free "
                        "port, logged at start-up)")
    p.add_argument("--metrics-address", default="127.0.0.1",
                   help="address the metrics server binds (default %(default)s; 0.0.0.0 for a remote Prometheus: "
                        "metrics show host names and task counts, no task data)")
    p.add_argument("--client-timeout", type=float, default=60.0,
                   help="seconds without news from a client after which its jobs are stopped and their tasks "
                        "killed, unless submitted with detach=True (default 60)")
    p.add_argument("--recovery-grace", type=float, default=3.0,
                   help="seconds a job submitted again after a boss restart waits for the agents to say which "
                        "of its tasks still run, before the others are dispatched (default 3)")
    p.add_argument("--max-frame-mb", type=float, default=None, metavar="MIB",
                   help="largest message the boss accepts, in MiB (default and most: 256); clients split their "
                        "tasks under it and agents cap reports under it")
    p.add_argument("--max-jobs-per-key", type=int, default=MAX_JOBS_PER_KEY, metavar="N",
                   help="live jobs one key may have on the boss; beyond, a SUBMIT fails with the reason "
                        f"(default {MAX_JOBS_PER_KEY})")
    p.add_argument("--max-held-mb-per-key", type=float, default=MAX_HELD_BYTES_PER_KEY / 2**20, metavar="MIB",
                   help="MiB of task instructions not reported yet one key may have on the boss; beyond, the job "
                        f"that adds them fails with the reason (default {MAX_HELD_BYTES_PER_KEY >> 20})")
    p.add_argument("--allow-placement-plugins", action="store_true",
                   help="let jobs whose scheduler overrides place() run that method here: it imports the "
                        "users' modules in the boss, so allow it only where you trust the users")
    return p


def agent_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="taylorism-agent", description=(
        "Run a taylorism-zmq agent on this host: it registers with the boss, runs each task it is given "
        "in its own process, and sends back reports, tracebacks and the host's load."))
    _common(p)
    p.add_argument("--boss", default=DEFAULT_CONTROL,
                   help="the boss's control endpoint (default %(default)s)")
    p.add_argument("--reports", default=None,
                   help="the boss's report endpoint (default: the one the boss names when the agent registers; "
                        "give it only where the agent reaches the boss at another address, e.g. through NAT)")
    p.add_argument("--control", dest="boss", help=argparse.SUPPRESS)  # the boss's own name of it
    p.add_argument("--slots", type=int, default=None,
                   help="tasks at once on this host (default: in a Slurm job, its CPUs on this node, "
                        "SLURM_CPUS_ON_NODE; else the cpu count)")
    p.add_argument("--host-name", default=None, help="name this host reports (default: its hostname)")
    p.add_argument("--heartbeat", type=float, default=None,
                   help="heartbeat period in s (default: the boss's --heartbeat, which it tells agents when they "
                        "register; 1 until then)")
    p.add_argument("--memory", type=float, default=None,
                   help="MiB of memory this host offers to tasks (default: the host's total memory)")
    p.add_argument("--inject-load", type=float, default=0.0,
                   help="add this to the load average reported (to test load-aware placement)")
    p.add_argument("--insecure", action="store_true",
                   help="connect over tcp without CURVE (the boss must run with --insecure too)")
    p.add_argument("--max-report-mb", type=float, default=256.0,
                   help="largest report a task may return, in MiB; a task over it is stopped and reported as "
                        "failed (default %(default)s; never more than the boss's frame cap allows)")
    p.add_argument("--max-output-kb", type=float, default=1024.0,
                   help="bytes of a task's stdout, and of its stderr, kept for its report, in KiB: the head and the "
                        "tail, with a note of what was dropped between (default %(default)s)")
    p.add_argument("--fork-socket", default=None, help=argparse.SUPPRESS)  # embedded: forks of the client come here
    p.add_argument("--state-dir", default=None,
                   help="where the agent keeps the reports the boss has not acknowledged yet (its journal, 0700), "
                        "so that none is lost while the boss is away, even across an agent restart (default "
                        "$XDG_STATE_HOME/taylorism/agent-HOST, i.e. ~/.local/state/taylorism/agent-HOST)")
    p.add_argument("--launcher-idle", type=float, default=600.0,
                   help="seconds a job environment's launcher (a process and its spare task processes) stays "
                        "once no task of it runs (default 600)")
    p.add_argument("--keep-env", default="", metavar="NAME[,NAME...]",
                   help="environment variables of this host that a job's own (which travels with it) does not "
                        "replace in its tasks, besides HOSTNAME, DISPLAY, TMPDIR, SSH_*, SLURM_*... (a trailing * "
                        "matches a prefix)")
    p.add_argument("--run-as-client-user", action="store_true",
                   help="(agent started as root) run each job's tasks as the Unix user its owner's key maps to "
                        "(taylorism-ctl authorize --user); jobs of keys with no user are refused")
    return p


def _check_endpoints(parser: argparse.ArgumentParser, args: argparse.Namespace, options: dict[str, str],
                     connect: bool = False) -> None:
    """Refuse a malformed endpoint at once, in one line naming the option (not a ZMQError from deep inside, nor
    retries in silence): to connect to, a port from 1 and a host name that resolves."""
    from .config import check_endpoint
    from .endpoints import resolve_problem

    for dest, option in options.items():
        value = getattr(args, dest)
        if value is not None:
            try:
                check_endpoint(value, option, connect=connect)
            except ValueError as exc:
                parser.error(str(exc))
            problem = resolve_problem(value) if connect else None
            if problem is not None:
                parser.error(f"{option} {value}: {problem}")


def _boss_endpoints(args: argparse.Namespace) -> tuple[str, str, str | None]:
    """The control and report endpoints the boss binds, and how the report endpoint was derived (None: given
    as --reports). One story: --reports; else the control host at --reports-port; else control port + 1."""
    from .endpoints import split_tcp

    control = args.control
    if control.startswith("tcp://") and not split_tcp(control)[1]:
        control = f"{control}:{args.port}"
    elif control.startswith("tcp://") and args._sources.get("port", "default") != "default" \
            and split_tcp(control)[1] != str(args.port):
        raise ValueError(f"--control {control} names a port and --port ({args._sources['port']}) another: "
                         "give the port once")
    if args.reports:
        return control, args.reports, None
    if args.reports_port is not None and control.startswith("tcp://"):
        host = split_tcp(control)[0]
        host = f"[{host}]" if ":" in host else host
        return control, f"tcp://{host}:{args.reports_port}", "--reports-port"
    try:
        return control, reports_endpoint(control), "the control port + 1" if control.startswith("tcp://") else \
            "the control path + -reports"
    except ValueError:
        return control, "", None  # (said by the endpoint check)


def _boss_effective(args: argparse.Namespace) -> dict:
    """What --print-config shows the boss binds."""
    try:
        control, reports, derived = _boss_endpoints(args)
    except ValueError as exc:
        return {"control": (args.control, str(exc))}
    shown = {"control": (control, args._sources["control"] + (f", port from {args._sources['port']}"
                                                              if control != args.control else ""))}
    if derived is not None:
        shown["reports"] = (reports, f"derived: {derived}")
    return shown


def boss_main(argv: Sequence[str] | None = None) -> int:
    args = settings.parse(boss_parser(), "boss", argv, effective=_boss_effective)
    try:
        args.control, args.reports, derived = _boss_endpoints(args)
    except ValueError as exc:
        boss_parser().error(str(exc))
    _check_endpoints(boss_parser(), args, {"control": "--control", "reports": "--reports"})
    if not 0 < args.heartbeat <= args.agent_timeout / MIN_BEATS_PER_TIMEOUT:
        boss_parser().error(f"--heartbeat {args.heartbeat:g} must be above 0 and at most --agent-timeout "
                            f"({args.agent_timeout:g}) / {MIN_BEATS_PER_TIMEOUT:g}: agents follow the boss's "
                            "heartbeat, and one late beat must not lose an agent; lower --heartbeat or raise "
                            "--agent-timeout")
    if args.max_jobs_per_key < 1 or not 1 / 1024 <= args.max_held_mb_per_key <= 2**40:  # (nan, inf: no)
        boss_parser().error("--max-jobs-per-key must be at least 1 and --max-held-mb-per-key a number of MiB "
                            "from 0.001 (1 KiB)")
    _use_key_dir(args)
    _setup_logging(args)
    from .boss.daemon import run_boss
    from .procutil import die_with_parent, stop_with_pipe
    from .wire.sockets import EndpointInUseError

    if args.parent_pid is not None:
        import signal

        die_with_parent(signal.SIGTERM, args.parent_pid)
    if args.parent_fd is not None:
        stop_with_pipe(args.parent_fd)
    from .wire.security import KeysError

    try:
        return run_boss(args)
    except (EndpointInUseError, KeysError, ValueError) as exc:
        why = ""
        if isinstance(exc, EndpointInUseError) and derived and args.reports in str(exc):
            why = f" (the report endpoint is {derived} unless --reports or --reports-port says otherwise)"
        logging.getLogger("taylorism_zmq.boss").error("%s%s", exc, why)
        return 2


def agent_slots(args: argparse.Namespace) -> tuple[int | None, str]:
    """The agent's slots and where they come from: --slots, else (in a Slurm job) the CPUs Slurm gave the job on
    this node, else None (the agent takes the cpu count)."""
    if args.slots is not None or getattr(args, "embedded", False):
        return args.slots, args._sources.get("slots", "default")
    import os

    slurm = os.environ.get("SLURM_CPUS_ON_NODE", "").strip()
    if slurm.isdigit() and int(slurm) > 0:
        return int(slurm), "Slurm's allocation on this node (SLURM_CPUS_ON_NODE)"
    return None, "default: the cpu count"


def agent_main(argv: Sequence[str] | None = None) -> int:
    args = settings.parse(agent_parser(), "agent", argv, effective=lambda a: {"slots": agent_slots(a)})
    args.slots = agent_slots(args)[0]
    _check_endpoints(agent_parser(), args, {"boss": "--boss", "reports": "--reports"}, connect=True)
    _use_key_dir(args)
    _setup_logging(args)
    if args.slots is not None and args.slots < 1:
        agent_parser().error("--slots must be at least 1")
    if args.heartbeat is not None and not args.heartbeat > 0:
        agent_parser().error("--heartbeat must be above 0 (or leave it out: the agent follows the boss's)")
    import os

    if args.run_as_client_user and os.geteuid() != 0:
        agent_parser().error("--run-as-client-user needs an agent started as root (it becomes each job's user)")
    from .agent.daemon import run_agent
    from .agent.journal import JournalError
    from .procutil import stop_with_pipe
    from .wire.security import KeysError

    if args.parent_fd is not None:
        stop_with_pipe(args.parent_fd)
    try:
        return run_agent(args)
    except KeysError as exc:
        logging.getLogger("taylorism_zmq.agent").error("%s", exc)
        return 2
    except JournalError as exc:  # the state directory: not writable, or every journal in it taken
        logging.getLogger("taylorism_zmq.agent").error("%s (choose another --state-dir)", exc)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    """python -m taylorism_zmq {boss,agent,ctl} ..."""
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"boss": boss_main, "agent": agent_main, "ctl": ctl_main}
    if not argv or argv[0] not in commands:
        print("usage: python -m taylorism_zmq {boss,agent,ctl} [--help]", file=sys.stderr)
        return 2
    start = time.monotonic()
    code = commands[argv[0]](argv[1:])
    logging.getLogger("taylorism_zmq").debug("%s ran %.1fs", argv[0], time.monotonic() - start)
    return code
