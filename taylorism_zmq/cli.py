"""Command lines: taylorism-boss, taylorism-agent, taylorism-ctl (their options: :mod:`.daemon_parsers`,
:mod:`.ctl.parser`)."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence

from . import command_settings
from .boss.validation import MAX_QUEUE_DEPTH
from .ctl import ctl_main, ctl_parser, format_hosts, format_jobs  # taylorism-ctl (its own package)
from .daemon_parsers import MIN_BEATS_PER_TIMEOUT, agent_parser, boss_parser
from .environment_variables import warn_unknown_variables
from .log_setup import setup_logging

__all__ = ["agent_main", "agent_parser", "boss_main", "boss_parser", "ctl_main", "ctl_parser", "format_hosts",
           "format_jobs", "main"]


def _use_key_dir(args: argparse.Namespace) -> None:
    """The key directory chosen by flag, environment or config file, for every part of this process."""
    import os

    if args.key_dir:
        os.environ["TAYLORISM_KEY_DIR"] = os.path.expanduser(args.key_dir)


def _setup_logging(args: argparse.Namespace) -> None:
    setup_logging(args.log_level, args.log_file, args.log_json)


def _check_endpoints(parser: argparse.ArgumentParser, args: argparse.Namespace, options: dict[str, str],
                     connect: bool = False) -> None:
    """Refuse a malformed endpoint at once, in one line naming the option (not a ZMQError from deep inside, nor
    retries in silence): to connect to, a port from 1 and a host name that resolves."""
    from .wire.endpoints import endpoint_list
    from .wire.sockets import check_endpoint, resolve_problem

    for dest, option in options.items():
        value = getattr(args, dest)
        if value is not None:
            try:  # (--boss may be a list: the bosses of a pair)
                endpoints = endpoint_list(value, option, connect) if dest == "boss" else \
                    [check_endpoint(value, option, connect=connect)]
            except ValueError as exc:
                parser.error(str(exc))
            for endpoint in endpoints if connect else ():
                problem = resolve_problem(endpoint)
                if problem is not None:
                    parser.error(f"{option} {endpoint}: {problem}")


def _boss_endpoints(args: argparse.Namespace) -> tuple[str, str, str | None]:
    """The control and report endpoints the boss binds, and how the report endpoint was derived (None: given
    as --reports). One story: --reports; else the control host at --reports-port; else control port + 1."""
    from .wire.sockets import default_reports_endpoint, split_tcp

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
        derived = "the control port + 1" if control.startswith("tcp://") else "the control path + -reports"
        return control, default_reports_endpoint(control), derived
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
    args = command_settings.parse(boss_parser(), "boss", argv, effective=_boss_effective,
                                  warn_unknown=warn_unknown_variables)
    try:
        args.control, args.reports, derived = _boss_endpoints(args)
    except ValueError as exc:
        boss_parser().error(str(exc))
    _check_endpoints(boss_parser(), args, {"control": "--control", "reports": "--reports"})
    _check_endpoints(boss_parser(), args, {"peer": "--peer"}, connect=True)
    if args.standby and not args.peer:
        boss_parser().error("--standby needs --peer (the active boss's control endpoint)")
    if not 0 <= args.queue_depth <= MAX_QUEUE_DEPTH:
        boss_parser().error(f"--queue-depth must be between 0 and {MAX_QUEUE_DEPTH}")
    if not 0.3 <= args.peer_timeout <= 3600:
        boss_parser().error("--peer-timeout must be between 0.3 and 3600 seconds")
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
    from .processes import die_with_parent, stop_with_pipe
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
    args = command_settings.parse(agent_parser(), "agent", argv, effective=lambda a: {"slots": agent_slots(a)},
                                  warn_unknown=warn_unknown_variables)
    args.slots = agent_slots(args)[0]
    _check_endpoints(agent_parser(), args, {"boss": "--boss", "reports": "--reports"}, connect=True)
    _use_key_dir(args)
    _setup_logging(args)
    if args.slots is not None and args.slots < 1:
        agent_parser().error("--slots must be at least 1")
    if args.heartbeat is not None and not args.heartbeat > 0:
        agent_parser().error("--heartbeat must be above 0 (or leave it out: the agent follows the boss's)")
    for option, value in (("--resend-after", args.resend_after), ("--boss-silence", args.boss_silence)):
        if not value > 0:
            agent_parser().error(f"{option} must be above 0 seconds")
    import os

    if args.run_as_client_user and os.geteuid() != 0:
        agent_parser().error("--run-as-client-user needs an agent started as root (it becomes each job's user)")
    # (a client's own agent, embedded or local, runs its client's tasks as its client's user, whoever that is)
    if os.geteuid() == 0 and not (args.run_as_client_user or args.allow_root_tasks or args.embedded):
        agent_parser().error("this agent runs as root and would run every user's tasks as root: give "
                             "--run-as-client-user (each job's tasks run as the Unix user its owner's key maps to) "
                             "or, to run them as root indeed, --allow-root-tasks")
    if args.max_processes is not None and args.max_processes < 1:
        agent_parser().error("--max-processes must be at least 1")
    from .agent.daemon import run_agent
    from .agent.journal import JournalError
    from .processes import stop_with_pipe
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
