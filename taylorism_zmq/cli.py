"""Command lines: taylorism-boss, taylorism-agent, taylorism-ctl (argparse lives only here)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence

from . import __version__, command_settings
from .boss.options import DEFAULTS, METRICS_ADDRESS
from .config_file import CONFIG_PLACES

DEFAULT_CONTROL = "tcp://127.0.0.1:5555"
#: a boss's --agent-timeout spans at least this many of its --heartbeat periods: an agent is lost after missing
#: several heartbeats, never one late one
MIN_BEATS_PER_TIMEOUT = 3.0


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--log-level", default="INFO", help="logging level (DEBUG, INFO, WARNING, ERROR)")
    parser.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--parent-fd", type=int, default=None, help=argparse.SUPPRESS)  # stop when it ends
    # a client's embedded daemons: private to it, set by its command line only (see command_settings.parse)
    parser.add_argument("--embedded", action="store_true", help=argparse.SUPPRESS)
    _key_dir_option(parser)
    command_settings.add_config_options(parser)


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
    command_settings.setup_logging(args.log_level, args.log_file, args.log_json)


def boss_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="taylorism-boss", description=(
        "Run the taylorism-zmq boss: it binds a control ROUTER (clients and agents) and a report PULL "
        "(agents' reports and heartbeats), and places the jobs' tasks on the agents' free slots."))
    _common(p)
    p.add_argument("--control", default=DEFAULT_CONTROL,
                   help="control endpoint to bind, tcp://HOST:PORT or ipc:///PATH (default %(default)s)")
    p.add_argument("--reports", default=None,
                   help="report endpoint to bind (default: the control port + 1, or PATH-reports for ipc); "
                        "agents learn it when they register")
    p.add_argument("--heartbeat", type=float, default=DEFAULTS.heartbeat,
                   help="agents' heartbeat period in s, told to each agent when it registers; agents given no "
                        f"--heartbeat of their own follow it (default {DEFAULTS.heartbeat:g})")
    p.add_argument("--agent-timeout", type=float, default=DEFAULTS.agent_timeout,
                   help="seconds of silence after which an agent is lost and its tasks requeued (default "
                        f"{DEFAULTS.agent_timeout:g}; at least {MIN_BEATS_PER_TIMEOUT:g} heartbeats)")
    p.add_argument("--max-retries", type=int, default=DEFAULTS.max_retries,
                   help=f"times a task may be requeued because its agent was lost (default {DEFAULTS.max_retries})")
    p.add_argument("--insecure", action="store_true",
                   help="serve tcp without CURVE authentication and encryption (then pickle is refused)")
    p.add_argument("--http", default=None, metavar="HOST:PORT",
                   help="serve a live status page there (off by default; use a loopback address and an SSH tunnel; "
                        "the URL with its token is logged at start-up, or put a token in <key dir>/http-token)")
    p.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                   help="serve Prometheus metrics on http://ADDRESS:PORT/metrics (off by default; 0 picks a free "
                        "port, logged at start-up)")
    p.add_argument("--metrics-address", default=METRICS_ADDRESS,
                   help="address the metrics server binds (default %(default)s; 0.0.0.0 for a remote Prometheus: "
                        "metrics show host names and task counts, no task data)")
    p.add_argument("--client-timeout", type=float, default=DEFAULTS.client_timeout,
                   help="seconds without news from a client after which its jobs are stopped and their tasks "
                        f"killed, unless submitted with detach=True (default {DEFAULTS.client_timeout:g})")
    p.add_argument("--recovery-grace", type=float, default=DEFAULTS.recovery_grace,
                   help="seconds a job submitted again after a boss restart waits for the agents to say which of "
                        "its tasks still run, before the others are dispatched "
                        f"(default {DEFAULTS.recovery_grace:g})")
    p.add_argument("--max-frame-mb", type=float, default=None, metavar="MIB",
                   help=f"largest message the boss accepts, in MiB (default and most: {DEFAULTS.max_frame >> 20}); "
                        "clients split their tasks under it and agents cap reports under it")
    p.add_argument("--max-jobs-per-key", type=int, default=DEFAULTS.max_jobs_per_key, metavar="N",
                   help="live jobs one key may have on the boss; beyond, a SUBMIT fails with the reason "
                        f"(default {DEFAULTS.max_jobs_per_key})")
    p.add_argument("--max-held-mb-per-key", type=float, default=DEFAULTS.max_held_bytes_per_key / 2**20, metavar="MIB",
                   help="MiB of task instructions not reported yet one key may have on the boss; beyond, the job "
                        f"that adds them fails with the reason (default {DEFAULTS.max_held_bytes_per_key >> 20})")
    p.add_argument("--allow-placement-plugins", action="store_true",
                   help="let jobs whose scheduler overrides place() run that method here: it imports the "
                        "users' modules in the boss, so allow it only where you trust the users")
    p.add_argument("--validate", action="store_true",
                   help="check every index of the boss's records against the records after every event, and log "
                        "a disagreement as a bug (for tests and debugging: it costs time in the number of tasks "
                        "at every event)")
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
    p.add_argument("--slots", type=int, default=None, help="tasks at once on this host (default: cpu count)")
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
    p.add_argument("--allow-root-tasks", action="store_true",
                   help="(agent started as root) run every job's tasks as root, whoever submits them; without it, "
                        "or --run-as-client-user, an agent started as root refuses to start")
    p.add_argument("--launcher-output", default=None, metavar="FILE",
                   help="where launchers' own stdout and stderr go (what a job's setup or worker modules print "
                        "outside a task, a launcher's errors), appended; never the agent's log (default "
                        "launchers.log in --state-dir)")
    p.add_argument("--max-processes", type=int, default=None, metavar="N",
                   help="RLIMIT_NPROC of launchers and their tasks: the most processes and threads their Unix user "
                        "may have at once (a fork bomb stops there; the kernel does not hold root to it; default: "
                        "the agent's own limit)")
    p.add_argument("--task-cgroups", choices=("auto", "off"), default="auto",
                   help="auto: where this agent can make cgroups (cgroup v2 with cgroup.kill, write access to its "
                        "own: root, or systemd's Delegate=yes), hold each launcher's tasks in one, so that nothing "
                        "they start outlives them whatever it does; off, or where it cannot: process tracking only "
                        "(default %(default)s)")
    return p


def ctl_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="taylorism-ctl", description="Look at and steer a running taylorism-zmq boss.")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("--boss", default=None, help="the boss's control endpoint (default: TAYLORISM_BOSS, else boss "
                   "in the [ctl], then the [client] table of the config file)")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the boss (default 5)")
    _key_dir_option(p)
    p.add_argument("--config", default=None, help="TOML config file: its [ctl] table, and [client] for the boss "
                   "(default: TAYLORISM_CONFIG, ~/.config/taylorism/config.toml, /etc/taylorism/config.toml)")
    p.add_argument("--print-config", action="store_true", help="print the settings in effect and exit")
    sub = p.add_subparsers(dest="command")
    for name, text in (("status", "hosts and jobs"), ("jobs", "jobs only")):
        c = sub.add_parser(name, help=f"show {text}")
        c.add_argument("--json", action="store_true", help="print raw JSON")
    c = sub.add_parser("keygen", help="write a CURVE key pair to the key directory and authorize it (all roles)")
    c.add_argument("--dir", default=None, help="key directory (default TAYLORISM_KEY_DIR or ~/.taylorism)")
    c.add_argument("--name", default="id", help="key name (default id: the key every command uses)")
    c.add_argument("--boss", action="store_true",
                   help="write the boss's own key pair (boss.key, boss.key_secret) instead: a boss uses it when "
                        "present, so agents never hold its secret; give boss.key to clients and agents")
    c.add_argument("--force", action="store_true", help="replace an existing key pair")
    c.add_argument("--no-authorize", action="store_true", help="do not add the public key to authorized/")
    c = sub.add_parser("authorize", help="let a public key in, with its roles (the boss sees it within a second)")
    c.add_argument("public_key", metavar="PUBLIC_KEY_FILE", help="the key's public file (someone's id.key)")
    c.add_argument("--role", action="append", choices=("client", "agent", "admin"), required=True,
                   help="client: submit, control and attach to its own jobs; agent: run tasks; admin: drain and "
                        "act on any job (repeat for several)")
    c.add_argument("--name", default=None, help="the key's name in logs and status (default: the file's name)")
    c.add_argument("--user", default=None, metavar="UNIX_USER",
                   help="the Unix user this key's jobs run as on agents started with --run-as-client-user")
    c.add_argument("--dir", default=None, help="authorized keys directory (default <key dir>/authorized)")
    c = sub.add_parser("revoke", help="remove an authorized key (refused from its next message on)")
    c.add_argument("name", help="the key's name (see taylorism-ctl keys)")
    c.add_argument("--dir", default=None, help="authorized keys directory (default <key dir>/authorized)")
    c = sub.add_parser("keys", help="list the authorized keys: names, roles, Unix users, fingerprints")
    c.add_argument("--dir", default=None, help="authorized keys directory (default <key dir>/authorized)")
    for name, text in (("drain", "stop placing tasks on HOST (running ones finish)"),
                       ("undrain", "place tasks on HOST again")):
        c = sub.add_parser(name, help=text)
        c.add_argument("host", help="host name (as the agents report it) or agent id")
    c = sub.add_parser("local", help="run a boss and agents on this machine, in the foreground, until Ctrl-C",
                       description="Run a boss and agents on this machine (a key pair is made if there is none), "
                                   "print the line to export in the shells whose programs should use them, and "
                                   "stop them all on Ctrl-C or SIGTERM.")
    c.add_argument("--agents", type=int, default=2, metavar="N", help="agents to run (default 2)")
    c.add_argument("--slots", type=int, default=None, metavar="S",
                   help="tasks at once on each agent (default: this machine's cpu count)")
    c.add_argument("--http", nargs="?", const="0", default=None, metavar="PORT",
                   help="serve the status page on 127.0.0.1:PORT (a free port when PORT is left out)")
    c.add_argument("--port", type=int, default=5555,
                   help="the boss's control port on 127.0.0.1 (its report port is the next one; default "
                        "%(default)s; 0: free ones)")
    c.add_argument("--log-level", default="WARNING", help="the daemons' logging level (default %(default)s)")
    return p


def _check_endpoints(parser: argparse.ArgumentParser, args: argparse.Namespace, options: dict[str, str]) -> None:
    """Refuse a malformed endpoint at once, in one line naming the option (not a ZMQError from deep inside)."""
    from .wire.sockets import check_endpoint

    for dest, option in options.items():
        value = getattr(args, dest)
        if value is not None:
            try:
                check_endpoint(value, option)
            except ValueError as exc:
                parser.error(str(exc))


def boss_main(argv: Sequence[str] | None = None) -> int:
    args = command_settings.parse(boss_parser(), "boss", argv)
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
    from .processes import die_with_parent, stop_with_pipe
    from .wire.sockets import EndpointInUseError, default_reports_endpoint

    args.reports = args.reports or default_reports_endpoint(args.control)

    if args.parent_pid is not None:
        import signal

        die_with_parent(signal.SIGTERM, args.parent_pid)
    if args.parent_fd is not None:
        stop_with_pipe(args.parent_fd)
    from .wire.security import KeysError

    try:
        return run_boss(args)
    except (EndpointInUseError, KeysError, ValueError) as exc:
        logging.getLogger("taylorism_zmq.boss").error("%s", exc)
        return 2


def agent_main(argv: Sequence[str] | None = None) -> int:
    args = command_settings.parse(agent_parser(), "agent", argv)
    _check_endpoints(agent_parser(), args, {"boss": "--boss", "reports": "--reports"})
    _use_key_dir(args)
    _setup_logging(args)
    if args.slots is not None and args.slots < 1:
        agent_parser().error("--slots must be at least 1")
    if args.heartbeat is not None and not args.heartbeat > 0:
        agent_parser().error("--heartbeat must be above 0 (or leave it out: the agent follows the boss's)")
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


def ctl_main(argv: Sequence[str] | None = None) -> int:
    parser = ctl_parser()
    args = command_settings.parse(parser, "ctl", argv)
    _use_key_dir(args)
    if args.command is None:
        parser.error("a command is needed: status, jobs, drain, undrain, keygen, authorize, revoke, keys or local")
    if args.command in ("keygen", "authorize", "revoke", "keys"):
        return _keys_command(args)
    if args.command == "local":
        if args.agents < 1 or (args.slots is not None and args.slots < 1) or not 0 <= args.port < 65535:
            parser.error("local needs --agents and --slots of 1 or more, and a --port from 0 to 65534")
        from .client.local import run_in_foreground

        return run_in_foreground(args.agents, args.slots, args.http, args.port, args.log_level)
    from .client.connection import Connection
    from .client.status import cluster_status
    from .client_settings import boss_address
    from .errors import AccessDeniedError, BossUnreachableError
    from .wire.protocol import Msg
    from .wire.security import KeysError

    path = command_settings.config_file(args.config)  # (--config, else the programs' file: see config_file.find_config)
    try:
        address = boss_address(args.boss, path)
    except ValueError as exc:
        print(f"taylorism-ctl: {exc}", file=sys.stderr)
        return 2
    if address is None:
        where = (f"{path}" if path else "a config file (none found: --config, TAYLORISM_CONFIG, "
                 f"{', '.join(CONFIG_PLACES)})")
        print(f"taylorism-ctl: no boss given: --boss, TAYLORISM_BOSS, or boss = \"tcp://HOST:PORT\" in the [ctl] "
              f"(or [client]) table of {where}", file=sys.stderr)
        return 2
    try:
        if args.command in ("drain", "undrain"):
            conn = Connection(address, timeout=args.timeout)
            reply = conn.request(Msg.ADMIN, {"action": args.command, "target": args.host}, Msg.ADMIN_REPLY)
            conn.close()
        else:
            status = cluster_status(address, timeout=args.timeout)
    except KeysError as exc:
        print(f"taylorism-ctl: {exc}", file=sys.stderr)
        return 2
    except (BossUnreachableError, AccessDeniedError) as exc:
        print(f"taylorism-ctl: {exc}", file=sys.stderr)
        return 1
    if args.command in ("drain", "undrain"):
        print(reply["message"], file=sys.stdout if reply["ok"] else sys.stderr)
        return 0 if reply["ok"] else 1
    if args.json:
        print(json.dumps(status if args.command == "status" else status["jobs"], indent=2))
        return 0
    if args.command == "status":
        print(format_hosts(status, address))
    print(format_jobs(status))
    return 0


def _keys_command(args: argparse.Namespace) -> int:
    """keygen, authorize, revoke, keys: they work on the key directory, no boss needed."""
    from pathlib import Path

    from .wire import keystore
    from .wire.security import key_dir, keygen

    authorized = Path(args.dir) if getattr(args, "dir", None) else key_dir() / "authorized"
    try:
        if args.command == "keygen":
            if args.boss:
                public = keygen(Path(args.dir) if args.dir else None, "boss", authorize=False, force=args.force)
            else:
                public = keygen(Path(args.dir) if args.dir else None, args.name, authorize=not args.no_authorize,
                                force=args.force)
            print(f"wrote {public} and {public}_secret (0600)")
            if not args.boss and not args.no_authorize:
                print(f"authorized it in {public.parent / 'authorized'} with every role (client, agent, admin): "
                      "a boss reading that directory accepts it")
        elif args.command == "authorize":
            path = keystore.authorize(authorized, Path(args.public_key), frozenset(args.role), args.name, args.user)
            print(f"authorized {path.stem} ({', '.join(r for r in keystore.ROLES if r in args.role)}"
                  f"{', runs as ' + args.user if args.user else ''}): {path}")
        elif args.command == "revoke":
            path = keystore.revoke(authorized, args.name)
            print(f"revoked {args.name} (removed {path}); a running boss refuses it from its next message on")
        else:
            keys, problems = keystore.list_keys(authorized)
            print(f"{'NAME':32} {'ROLES':20} {'USER':12} FINGERPRINT")
            for ident in keys:
                print(f"{ident.name[:32]:32} {','.join(r for r in keystore.ROLES if r in ident.roles):20} "
                      f"{(ident.user or '-')[:12]:12} {keystore.fingerprint(ident.key)}")
            for problem in problems:
                print(f"refused: {problem}", file=sys.stderr)
    except (FileExistsError, keystore.KeysError) as exc:
        print(f"taylorism-ctl: {exc}", file=sys.stderr)
        return 1
    return 0


def format_hosts(status: dict, address: str) -> str:
    """The hosts table of taylorism-ctl status."""
    lines = [f"boss {status['boss']} at {address}: {len(status['hosts'])} agent(s)",
             f"{'HOST':20} {'SLOTS USED':>10} {'LOAD':>6} {'CPU%':>5} {'MEM FREE':>10} {'DONE':>7} "
             f"{'SEEN':>6}  STATE"]
    for h in sorted(status["hosts"], key=lambda h: h["host"]):
        load = f"{h['load'][0]:.2f}" if h["load"] else "-"
        state = "draining" if h["draining"] else "ok"
        lines.append(f"{h['host'][:20]:20} {h['running']:>4}/{h['slots']:<5} {load:>6} {h['cpu']:>5.0f} "
                     f"{h['mem_avail']:>7.0f}MiB {h['done']:>7} {h['last_seen']:>5.1f}s  {state}")
    return "\n".join(lines)


def format_jobs(status: dict) -> str:
    """The jobs table of taylorism-ctl status and jobs."""
    lines = [f"{'JOB':18} {'NAME':20} {'CLIENT':26} {'DONE':>6} {'RUN':>5} {'PEND':>6} {'FAIL':>5} {'AGE':>8}"]
    for j in status["jobs"]:
        lines.append(f"{j['job']:18} {j['name'][:20]:20} {j['client'][:26]:26} {j['done']:>6} {j['running']:>5} "
                     f"{j['pending']:>6} {j['failed']:>5} {j['age']:>7.1f}s")
    if not status["jobs"]:
        lines.append("(no jobs)")
    others = status.get("other_jobs") or {}
    if others.get("jobs"):
        lines.append(f"and {others['jobs']} job(s) of other users: {others.get('running', 0)} task(s) running, "
                     f"{others.get('pending', 0)} pending")
    return "\n".join(lines)


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
