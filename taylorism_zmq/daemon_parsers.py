"""The options of taylorism-boss and taylorism-agent (taylorism-ctl's: :mod:`.ctl.parser`): argparse
parsers, with no import of what the commands run, so that any part may read which settings exist (the
``TAYLORISM_*`` variables: :mod:`.environment_variables`)."""

from __future__ import annotations

import argparse

from . import __version__, command_settings
from .boss.options import DEFAULTS, METRICS_ADDRESS

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
    # a client's embedded daemons: private to it, set by its command line only (see command_settings.parse)
    parser.add_argument("--embedded", action="store_true", help=argparse.SUPPRESS)
    _key_dir_option(parser)
    command_settings.add_config_options(parser)


def _key_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--key-dir", default=None,
                        help="directory of the CURVE keys (id.key_secret, boss.key, authorized/; default "
                             "~/.taylorism)")


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
    p.add_argument("--heartbeat", type=float, default=DEFAULTS.heartbeat,
                   help="agents' heartbeat period in s, told to each agent when it registers; agents given no "
                        f"--heartbeat of their own follow it (default {DEFAULTS.heartbeat:g})")
    p.add_argument("--agent-timeout", type=float, default=DEFAULTS.agent_timeout,
                   help="seconds of silence after which an agent is lost and its tasks requeued (default "
                        f"{DEFAULTS.agent_timeout:g}; at least {MIN_BEATS_PER_TIMEOUT:g} heartbeats)")
    p.add_argument("--max-retries", type=int, default=DEFAULTS.max_retries,
                   help=f"times a task may be requeued because its agent was lost (default {DEFAULTS.max_retries})")
    p.add_argument("--queue-depth", type=int, default=DEFAULTS.queue_depth, metavar="N",
                   help="tasks of a job of reused processes (max_tasks_per_process) queued at most on an agent behind "
                        "each running one, which it starts as that one ends, without a round trip through the boss "
                        "(as many as about 2 ms of the job's tasks; 0: none; default "
                        f"{DEFAULTS.queue_depth})")
    p.add_argument("--insecure", action="store_true",
                   help="serve tcp without CURVE authentication and encryption (then pickle is refused)")
    p.add_argument("--http", default=None, metavar="HOST:PORT",
                   help="serve a live status page there (off by default; use a loopback address and an SSH tunnel). "
                        "It shows every user's jobs and failures: its token is an admin's, TAYLORISM_HTTP_TOKEN or "
                        "<key dir>/http-token (written there when there is none; never logged)")
    p.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                   help="serve Prometheus metrics on http://ADDRESS:PORT/metrics (off by default; 0 picks a free "
                        "port, logged at start-up)")
    p.add_argument("--metrics-address", default=METRICS_ADDRESS,
                   help="address the metrics server binds (default %(default)s; 0.0.0.0 for a remote Prometheus: "
                        "metrics show host names and task counts, no task data)")
    p.add_argument("--client-timeout", type=float, default=DEFAULTS.client_timeout,
                   help="seconds without news from a client after which its jobs are stopped and their tasks "
                        f"killed, unless submitted with detach=True (default {DEFAULTS.client_timeout:g})")
    p.add_argument("--detached-timeout", type=float, default=DEFAULTS.detached_timeout, metavar="SECONDS",
                   help="seconds a detached job with nothing to run (halted, or every task reported and no end "
                        "said) waits for its client, silent or gone, before it is stopped, its reports kept for "
                        f"Boss.attach (default {DEFAULTS.detached_timeout:g})")
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
    p.add_argument("--max-connections-per-key", type=int, default=DEFAULTS.max_connections_per_key, metavar="N",
                   help="connections one key may hold (an admin key's: any number; agents sharing a key hold two "
                        "each); beyond, its handshakes are turned away for now, with the reason "
                        f"(default {DEFAULTS.max_connections_per_key})")
    p.add_argument("--max-pending-connections", type=int, default=DEFAULTS.max_pending_connections, metavar="N",
                   help="connections that have not spoken yet (in their handshake, or silent since) kept at once; "
                        f"beyond, the oldest is let go (default {DEFAULTS.max_pending_connections})")
    p.add_argument("--handshake-timeout", type=float, default=DEFAULTS.handshake_timeout, metavar="SECONDS",
                   help="seconds a connection may take to finish its handshake (default "
                        f"{DEFAULTS.handshake_timeout:g})")
    p.add_argument("--allow-placement-plugins", action="store_true",
                   help="let jobs whose scheduler overrides place() run that method here: it imports the "
                        "users' modules in the boss, so allow it only where you trust the users")
    p.add_argument("--peer", default=None, metavar="ENDPOINT",
                   help="the control endpoint of the other boss of a pair: the active one streams its state to the "
                        "standby, which takes over when the active is silent for --peer-timeout and a client or "
                        "agent turns to it (the pair shares one boss key pair)")
    p.add_argument("--standby", action="store_true",
                   help="(with --peer) start as the standby: follow the active boss, never serve first")
    p.add_argument("--peer-timeout", type=float, default=3.0, metavar="SECONDS",
                   help="seconds of silence from the active boss after which its standby may take over "
                        "(default %(default)s)")
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
                   help="the boss's control endpoint, or a comma-separated list (a pair of bosses: the agent "
                        "follows the active one) (default %(default)s)")
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
    p.add_argument("--handoff-dir", default=None, help=argparse.SUPPRESS)  # embedded: large reports as files there
    p.add_argument("--state-dir", default=None,
                   help="where the agent keeps the reports the boss has not acknowledged yet (its journal, 0700), "
                        "so that none is lost while the boss is away, even across an agent restart (default "
                        "$XDG_STATE_HOME/taylorism/agent-HOST, i.e. ~/.local/state/taylorism/agent-HOST)")
    p.add_argument("--resend-after", type=float, default=5.0,
                   help="seconds a batch of reports the boss has not acknowledged waits before it goes to the "
                        "journal and is sent again (default %(default)s)")
    p.add_argument("--boss-silence", type=float, default=10.0,
                   help="seconds without a word from the boss, and at least 10 heartbeats, before the agent says "
                        "so in its log, once (default %(default)s)")
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
