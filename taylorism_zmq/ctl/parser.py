"""taylorism-ctl's command line: global options accepted before or after the subcommand (as git and kubectl
take them), a subparser per command."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from .. import __version__

#: commands that talk to a boss, and those that work on the key directory only
BOSS_COMMANDS = ("status", "jobs", "drain", "undrain", "cancel", "attach", "wait", "takeover")
KEY_COMMANDS = ("keygen", "authorize", "revoke", "keys")
COMMANDS = (*BOSS_COMMANDS, *KEY_COMMANDS, "local", "completion")


def _boss_options(add: Callable[..., object], given_only: bool) -> None:
    """The options of every command that talks to a boss."""
    kw = {"default": argparse.SUPPRESS} if given_only else {}
    add("--boss", **({"default": None} | kw), help="the boss's control endpoint, or a comma-separated list (a "
        "pair of bosses) (default: TAYLORISM_BOSS, else boss in the [ctl], then the [client] table of the config "
        "file)")
    add("--timeout", type=float, **({"default": 5.0} | kw), help="seconds to wait for the boss (default 5)")
    add("--insecure", action="store_true", **({"default": False} | kw),
        help="talk to a boss run with --insecure: tcp without CURVE (as TAYLORISM_INSECURE=1)")


def _common_options(add: Callable[..., object], given_only: bool) -> None:
    """The options of every command."""
    kw = {"default": argparse.SUPPRESS} if given_only else {}
    add("--key-dir", **({"default": None} | kw),
        help="directory of the CURVE keys (id.key_secret, boss.key, authorized/; default ~/.taylorism)")
    add("--config", **({"default": None} | kw), help="TOML config file: its [ctl] table, and [client] for the "
        "boss (default: TAYLORISM_CONFIG, ~/.config/taylorism/config.toml, /etc/taylorism/config.toml)")
    add("--print-config", action="store_true", **({"default": False} | kw),
        help="print the settings this command would use, and where each came from, and exit")
    add("--log-level", **({"default": "WARNING"} | kw),
        help="logging level of this command (and of the daemons of `local`): DEBUG, INFO, WARNING, ERROR "
             "(default WARNING)")


def _sub(sub: argparse._SubParsersAction, name: str, boss: bool, **kw: object) -> argparse.ArgumentParser:
    """A subcommand that also takes the global options (after its name; they win over those before it)."""
    c = sub.add_parser(name, **kw)  # type: ignore[arg-type]
    group = c.add_argument_group("global options (also accepted before the command)")
    if boss:
        _boss_options(group.add_argument, given_only=True)
    _common_options(group.add_argument, given_only=True)
    return c


def ctl_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="taylorism-ctl", description="Look at and steer a running taylorism-zmq "
                                "boss; options may come before or after the command.")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _boss_options(p.add_argument, given_only=False)
    _common_options(p.add_argument, given_only=False)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, text in (("status", "hosts and jobs"), ("jobs", "jobs only")):
        c = _sub(sub, name, True, help=f"show {text}")
        c.add_argument("--json", action="store_true", help="print raw JSON")
        c.add_argument("-w", "--watch", nargs="?", type=float, const=2.0, default=None, metavar="SECONDS",
                       help="print it again every SECONDS (default 2), as watch(1) does, until Ctrl-C")
        if name == "jobs":
            c.add_argument("-q", "--quiet", action="store_true", help="print the job ids only, one a line")
    c = _sub(sub, "keygen", False, help="write a CURVE key pair to the key directory (--key-dir) and authorize it "
             "(all roles)")
    c.add_argument("--name", default="id", help="key name (default id: the key every command uses)")
    c.add_argument("--boss", dest="boss_key", action="store_true",
                   help="write the boss's own key pair (boss.key, boss.key_secret) instead: a boss uses it when "
                        "present, so agents never hold its secret; give boss.key to clients and agents")
    c.add_argument("--force", action="store_true", help="replace an existing key pair")
    c.add_argument("--no-authorize", action="store_true", help="do not add the public key to authorized/")
    c = _sub(sub, "authorize", False, help="let a public key in, with its roles (the boss sees it within a "
             "second); it goes to <key dir>/authorized")
    c.add_argument("public_key", metavar="PUBLIC_KEY_FILE", help="the key's public file (someone's id.key)")
    c.add_argument("--role", action="append", choices=("client", "agent", "admin", "boss"), required=True,
                   help="client: submit, control and attach to its own jobs; agent: run tasks; admin: drain and "
                        "act on any job; boss: the other boss of a pair, which gets every job's state (repeat for "
                        "several)")
    c.add_argument("--name", default=None, help="the key's name in logs and status (default: the file's name)")
    c.add_argument("--user", default=None, metavar="UNIX_USER",
                   help="the Unix user this key's jobs run as on agents started with --run-as-client-user")
    c = _sub(sub, "revoke", False, help="remove an authorized key (refused from its next message on)")
    c.add_argument("name", help="the key's name (see taylorism-ctl keys)")
    _sub(sub, "keys", False, help="list the authorized keys: names, roles, Unix users, fingerprints")
    for name, text in (("drain", "stop placing tasks on HOST or AGENT (running ones finish)"),
                       ("undrain", "place tasks on HOST or AGENT again")):
        c = _sub(sub, name, True, help=text)
        c.add_argument("host", metavar="HOST_OR_AGENT",
                       help="a host name (all its agents) or an agent id (see taylorism-ctl status)")
    c = _sub(sub, "cancel", True, help="cancel a job (its owner's key, or an admin's): its tasks are killed and "
             "its program gets a JobCancelledError naming who cancelled it")
    c.add_argument("job", metavar="JOB", help="the job's id (taylorism-ctl jobs)")
    c = _sub(sub, "attach", True, help="follow a job, detached or not, to its end: its reports, and its live "
             "output when it streams it; exits with the job's status (0 finished, 1 failed, 3 stopped, "
             "4 cancelled, 5 not followed)")
    c.add_argument("job", metavar="JOB", help="the job's id (taylorism-ctl jobs)")
    c = _sub(sub, "takeover", True, help="make the standby boss of a pair (--boss) the active one",
             description="Ask the standby boss given by --boss to take over: its active peer streams its last "
                         "events and stands by, then this one serves (clients and agents follow).")
    c.add_argument("--force", action="store_true",
                   help="take over even if not in sync with the active boss (what it has not got is lost)")
    c = _sub(sub, "wait", True, help="wait until agents have registered (for scripts): 0 once they have, 1 at "
             "--timeout (here: seconds to wait in all, default 60)")
    c.add_argument("--agents", type=int, default=1, metavar="N", help="agents to wait for (default 1)")
    c = _sub(sub, "completion", False, help="print a bash completion script: "
             "eval \"$(taylorism-ctl completion bash)\" in ~/.bashrc, or save it in "
             "/etc/bash_completion.d/taylorism-ctl")
    c.add_argument("shell", nargs="?", choices=("bash",), default="bash", help="the shell (bash)")
    c = _sub(sub, "local", False, help="run a boss and agents on this machine, in the foreground, until Ctrl-C",
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
                        "5555; 0: free ones)")
    return p
