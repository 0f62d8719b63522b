"""What the README and docs/ show, run as a reader would; and behaviours they state, shown on real daemons.

The README's commands, its program and its cluster quick-start run as written (the quick-start on loopback,
with a key directory of its own); every python block of the README and docs/ runs, but those marked
``<!-- not run: why -->`` just above; every link leads to a file and heading that exist; every flag of the
commands, every public name and argument of the API, and every benchmark command line of the docs exist.
"""

from __future__ import annotations

import inspect
import os
import pathlib
import re
import shlex
import stat
import subprocess
import sys
from typing import NamedTuple

import footprints
import psutil
import pytest
import zmq
import zt_workers  # noqa: F401 - registers the test worker classes
from conftest import alive, free_port_pair, wait_until

import taylorism_zmq
from taylorism_zmq import batch_main, run_as_server
from taylorism_zmq.client.connection import Connection
from taylorism_zmq.wire import protocol
from taylorism_zmq.wire.protocol import Msg

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "taylorism_zmq"


def threads(n: int):
    return footprints.proxy.scheduler(limit="threads", max_threads=n)


def quiet(_report) -> None:
    pass


def wait_for_pids(directory: pathlib.Path, n: int) -> list[int]:
    wait_until(lambda: len(os.listdir(directory)) >= n, 20, f"{n} task(s) started")
    return [int(name.split(".")[1]) for name in sorted(os.listdir(directory))]


def test_a_task_that_ignores_sigterm_is_killed_after_a_grace_second(tmp_path):
    pids, ledger = tmp_path / "pids", tmp_path / "ledger"
    pids.mkdir()
    boss = run_as_server(dict(zt="nap", seconds=60, on_term="note", ledger=str(ledger), pids=str(pids)),
                         dict(tag=[1]), scheduler=threads(1))
    (pid,) = wait_for_pids(pids, 1)
    boss.stop_them_working()
    boss.wait_till_finished()
    wait_until(lambda: not alive(pid), 20, "the task to be killed")
    lines = ledger.read_text().splitlines()
    termed = [float(line.split()[1]) for line in lines if line.startswith("TERM")]
    alive_at = [float(line.split()[1]) for line in lines if line.startswith("ALIVE")]
    assert len(termed) == 1  # it was asked to go first, and did not
    # it lived on for the grace second (it said so every 20 ms), then was killed long before its 60 s
    assert 0.75 <= alive_at[-1] - termed[0] < 10, (termed, alive_at[-1])


def test_embedded_endpoints_live_in_a_private_directory():
    from taylorism_zmq.client.embedded import embedded_endpoint

    path = embedded_endpoint()[len("ipc://"):]
    directory = os.stat(os.path.dirname(path))
    assert stat.S_IMODE(directory.st_mode) == 0o700 and directory.st_uid == os.getuid()


def test_the_boss_code_never_unpickles_but_a_placement_plugin_it_is_allowed_to_run():
    unpickling = re.compile(r"import (cloud)?pickle|from (cloud)?pickle|pickle\.|Codec\(|\.loads\(")
    for path in (PACKAGE / "boss").rglob("*.py"):
        found = unpickling.findall(path.read_text())
        if path.name == "plugins.py":  # a driver script's scheduler class, under --allow-placement-plugins
            assert len(found) == 2, found  # its import, and one pickle.loads
        else:
            assert not found, path


def test_a_pickle_in_a_report_is_passed_on_never_opened_by_the_boss(cluster_factory, tmp_path):
    """A report that can only travel as a pickle, which records who unpickles it: only the client does."""
    who = tmp_path / "unpicklers"
    cluster = cluster_factory()
    cluster.add_agent(slots=1)
    cluster.wait_agents(1)
    batch_main(dict(zt="pickle", path=str(who)), dict(name=["p"]), scheduler=threads(1), boss=cluster.control,
               print_report=quiet)
    assert who.read_text().split() == [str(os.getpid())]


def test_max_threads_zero_means_half_of_each_hosts_cpus(cluster_factory):
    cluster = cluster_factory()
    for name in ("node-a", "node-b"):
        cluster.add_agent(slots=8, host_name=name)
    cluster.wait_agents(2)
    report = batch_main(dict(zt="nap", seconds=0.3), dict(tag=list(range(8))), scheduler=threads(0),
                        boss=cluster.control, print_report=quiet)
    half = max(1, psutil.cpu_count() // 2)
    for host in ("node-a", "node-b"):
        spans = sorted((r["report"]["t0"], r["report"]["t1"]) for r in report["workers_report"]
                       if r["report"]["host"] == host)
        events = sorted([(t0, 1) for t0, _ in spans] + [(t1, -1) for _, t1 in spans])
        running = peak = 0
        for _, step in events:
            running += step
            peak = max(peak, running)
        assert peak == half, (host, peak, half)


def test_output_streams_live_by_default_embedded_and_not_from_a_cluster(cluster_factory, capsys):
    batch_main(dict(zt="talk", lines=1), dict(name=["chatty"]), scheduler=threads(1), print_report=quiet)
    assert "[chatty] chatty out 0" in capsys.readouterr().out
    cluster = cluster_factory()
    cluster.add_agent(slots=1)
    cluster.wait_agents(1)
    report = batch_main(dict(zt="talk", lines=1), dict(name=["remote"]), scheduler=threads(1),
                        boss=cluster.control, print_report=quiet)
    assert "[remote]" not in capsys.readouterr().out
    assert report["workers_report"][0]["stdout"].startswith("remote out 0")  # the report keeps it


def test_a_rejoining_agent_kills_its_stale_copies(cluster_factory, tmp_path):
    cluster = cluster_factory(agent_timeout=1.5)
    stale_agent = cluster.add_agent(slots=1, host_name="node-stale")
    cluster.add_agent(slots=1, host_name="node-alive")
    cluster.wait_agents(2)
    assert cluster.ctl("drain", "node-alive").returncode == 0
    pids = tmp_path / "pids"
    pids.mkdir()
    boss = run_as_server(dict(zt="nap", seconds=60, pids=str(pids)), dict(tag=[1]), scheduler=threads(1),
                         boss=cluster.control)
    (stale,) = wait_for_pids(pids, 1)
    assert cluster.ctl("undrain", "node-alive").returncode == 0
    agent = psutil.Process(stale_agent.pid)
    agent.suspend()  # the agent alone: its task goes on
    try:
        wait_until(lambda: "node-stale" not in {h["host"] for h in cluster.status()["hosts"]}, 15, "declared lost")
        wait_for_pids(pids, 2)  # the task runs again on node-alive
        assert psutil.pid_exists(stale)
    finally:
        agent.resume()
    wait_until(lambda: "node-stale" in {h["host"] for h in cluster.status()["hosts"]}, 15, "the agent to rejoin")
    wait_until(lambda: not alive(stale), 15, "the stale copy killed")
    assert any(h["running"] for h in cluster.status()["hosts"] if h["host"] == "node-alive")  # the live copy runs
    boss.stop_them_working()
    boss.wait_till_finished()


def test_bad_messages_are_logged_at_most_once_per_peer_and_period(tmp_path):
    log = tmp_path / "boss.log"
    control = f"ipc://{tmp_path}/control"
    boss = subprocess.Popen([sys.executable, "-m", "taylorism_zmq", "boss", "--control", control,
                             "--log-file", str(log)])
    try:
        wait_until(lambda: log.exists() and "listening" in log.read_text(), 20, "the boss")
        ctx = zmq.Context()
        sock = ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.connect(control)
        for _ in range(200):
            sock.send_multipart([protocol.VERSION_FRAME, bytes([Msg.PING]), b"\xc1"])
        # (no PING after them to wait for its PONG: the boss drops answers to a peer that does not read them
        # beyond its send queue, the PONG with them)
        conn = Connection(control, timeout=30)
        try:
            wait_until(lambda: conn.request(Msg.STATUS, {}, Msg.STATUS_REPLY)["status"]["counters"].get(
                "bad_messages", 0) == 200, 30, "the boss to count the 200 bad messages")
        finally:
            conn.close()
        sock.close()
        ctx.term()
    finally:
        boss.terminate()
        boss.wait(timeout=10)
    dropped = [line for line in log.read_text().splitlines() if "dropped a bad message" in line]
    assert 1 <= len(dropped) <= 2, dropped


# -- what the README and docs/ show, run as a reader would ----------------------------------------------------
ROOT = PACKAGE.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
#: the README is a front page; reference material goes to docs/
README_MAX_BYTES = 15_500
#: a mark on the line above a block that is shown, not run
NOT_RUN = re.compile(r"<!--\s*not run:\s*(.+?)\s*-->")
FENCE = re.compile(r"^(\s*)```(\w*)\s*$")


class Block(NamedTuple):
    """A fenced code block of a page."""

    page: pathlib.Path
    line: int
    lang: str
    text: str
    #: why it is not run, if it is marked so
    not_run: str | None


def blocks(page: pathlib.Path) -> list[Block]:
    """The fenced code blocks of *page*, dedented to their fence (blocks in list items are indented)."""
    found, lines, i = [], page.read_text().splitlines(), 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, lang, start = len(opening.group(1)), opening.group(2), i
        i += 1
        body = []
        while not FENCE.match(lines[i]):
            body.append(lines[i][indent:])
            i += 1
        above = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        mark = NOT_RUN.search(above)
        found.append(Block(page, start + 1, lang, "\n".join(body) + "\n", mark.group(1) if mark else None))
        i += 1
    return found


def section(page: pathlib.Path, title: str) -> str:
    """The text of the section *title* of *page* (to its next heading of the same or a higher level)."""
    found, level, fenced = [], 0, False
    for line in page.read_text().splitlines():
        fenced ^= bool(FENCE.match(line))
        heading = None if fenced else re.match(r"(#+) (.*?)\s*$", line)
        if heading and level and len(heading.group(1)) <= level:
            break
        if heading and heading.group(2) == title:
            level = len(heading.group(1))
        elif level:
            found.append(line)
    assert level, f"{page.name} has no section {title!r}"
    return "\n".join(found)


def blocks_of_section(page: pathlib.Path, title: str, lang: str) -> list[str]:
    body = section(page, title)
    return [b.text for b in blocks(page) if b.lang == lang and b.text.strip() in body]


def commands(block: str) -> list[str]:
    """The command lines of a shell block, comments and blank lines left out."""
    lines = [line.split(" #")[0].strip() for line in block.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def clean_env(home: pathlib.Path) -> dict[str, str]:
    """A newcomer's environment: a HOME of its own, no boss, key directory or config file set by the suite."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("XDG_") and k not in ("TAYLORISM_KEY_DIR", "TAYLORISM_BOSS", "TAYLORISM_CONFIG",
                                                     "TAYLORISM_INSECURE", "PYTHONPATH")}
    env["HOME"] = str(home)
    return env


def argv(line: str) -> list[str]:
    """A documented command line, run by this interpreter (the suite's installed commands may be elsewhere)."""
    words = shlex.split(line)
    if words[0].startswith("taylorism-"):
        return [sys.executable, "-m", "taylorism_zmq", words[0][len("taylorism-"):], *words[1:]]
    if words[0] in ("python", "python3"):
        return [sys.executable, *words[1:]]
    raise AssertionError(f"a documented command this test does not know how to run: {line}")


def test_the_readme_is_a_front_page_and_the_reference_is_in_docs():
    assert len(README.read_bytes()) <= README_MAX_BYTES, "reference material belongs in docs/, linked from the README"
    linked = set(re.findall(r"\]\((docs/[\w.-]+\.md)", README.read_text()))
    assert linked == {f"docs/{page.name}" for page in DOCS}, "every page of docs/ is linked from the README"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[`*]|\[|\]\([^)]*\)", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(page: pathlib.Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {_slug(m) for m in re.findall(r"^#+ (.+)$", text, re.M)}


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: p.name)
def test_every_link_leads_to_a_file_and_a_heading_that_exist(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{page.name} links to {target}: no such file"
        if anchor:
            assert anchor in _anchors(linked), f"{page.name} links to {target}: no such heading in {linked.name}"


def test_the_ci_runs_exactly_the_readmes_test_command():
    (block,) = [b for b in blocks_of_section(README, "Two commands", "sh") if "pytest" in b]
    (command,) = commands(block)
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1] == command


def test_the_readmes_first_command_installs_and_runs_the_demo(tmp_path):
    (block,) = [b for b in blocks_of_section(README, "Two commands", "sh") if "demo" in b]
    (command,) = commands(block)
    install, _, demo = command.partition(" && ")
    assert install == "pip install ."  # (the suite runs from an install already)
    done = subprocess.run(argv(demo), cwd=tmp_path, env=clean_env(tmp_path), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "40 tasks, status 'finished'" in done.stdout
    assert done.stdout.count("WORKER NAME: ") == 40


def _python_blocks() -> list[Block]:
    return [b for page in (README, *DOCS) for b in blocks(page) if b.lang == "python"]


@pytest.mark.parametrize("block", _python_blocks(), ids=lambda b: f"{b.page.name}:{b.line}")
def test_every_python_block_runs_as_shown(block, tmp_path):
    if block.not_run:
        assert len(block.not_run) > 10  # the mark says why
        pytest.skip(f"marked not run: {block.not_run}")
    script = tmp_path / "snippet.py"
    script.write_text(block.text)
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=clean_env(tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{block.page.name}:{block.line}\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"


def _start_boss(command: list[str], env: dict[str, str], log: pathlib.Path) -> subprocess.Popen:
    """Start a boss logging to *log*; return once it listens (or fail with its log, if it exited)."""
    boss = subprocess.Popen([*command, "--log-file", str(log)], cwd=log.parent, env=env, stdin=subprocess.DEVNULL)
    wait_until(lambda: boss.poll() is not None or (log.exists() and "listening" in log.read_text()), 20, "the boss")
    assert boss.poll() is None, f"the boss exited: {log.read_text() if log.exists() else ''}"
    return boss


def test_the_readmes_cluster_quick_start_runs_on_one_machine(tmp_path):
    """keygen, a boss, two agents (each with a --host-name, as the README says for one machine), the README's
    my_driver.py with TAYLORISM_BOSS exported (its tasks run on those agents), then taylorism-ctl status."""
    (block,) = blocks_of_section(README, "A cluster", "sh")
    address = re.search(r"tcp://([\d.]+):5555", block)
    assert address, "the quick-start names its boss's address"
    port = free_port_pair()
    lines = [line.replace(f"{address.group(1)}:5555", f"127.0.0.1:{port}") for line in commands(block)]
    (driver,) = [b.text for b in blocks(README) if b.lang == "python" and "__main__" in b.text]
    assert "my_driver.py" in section(README, "Your program") and "python my_driver.py" in lines
    (tmp_path / "my_driver.py").write_text(driver)
    env = clean_env(tmp_path)
    log = tmp_path / "boss.log"
    daemons: list[subprocess.Popen] = []
    outputs: dict[str, str] = {}
    try:
        for line in lines:
            if line.startswith("export "):
                name, _, value = line[len("export "):].partition("=")
                env[name] = value
            elif line.startswith("taylorism-boss"):
                daemons.append(_start_boss(argv(line), env, log))
            elif line.startswith("taylorism-agent"):
                for host in ("node-1", "node-2"):
                    daemons.append(subprocess.Popen([*argv(line), "--host-name", host], cwd=tmp_path, env=env,
                                                    stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            else:
                if line.startswith("python"):  # the agents are up before the driver goes (as a reader waits)
                    wait_until(lambda: "2 agent(s)" in subprocess.run(
                        argv(f"taylorism-ctl --boss {env['TAYLORISM_BOSS']} status"), env=env, capture_output=True,
                        text=True, timeout=30).stdout, 30, "two agents")
                done = subprocess.run(argv(line), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
                assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
                outputs[line] = done.stdout
    finally:
        from taylorism_zmq.processes import stop_processes

        stop_processes(daemons, grace=10)
    assert (tmp_path / ".taylorism" / "authorized").is_dir()  # keygen wrote to ~/.taylorism
    squares = eval(outputs["python my_driver.py"].strip().splitlines()[-1])
    assert [square for square, _host in squares] == [1, 4, 9, 16]
    assert {host for _square, host in squares} <= {"node-1", "node-2"}
    status = outputs["taylorism-ctl status"]
    # (HOST AGENT SLOTS LOAD CPU% MEM DONE ...)
    done = {row.split()[0]: int(row.split()[6]) for row in status.splitlines() if row.startswith("node-")}
    assert set(done) == {"node-1", "node-2"} and sum(done.values()) == 4, status


def test_every_flag_of_the_commands_is_documented():
    from taylorism_zmq import cli

    text = "\n".join(page.read_text() for page in DOCS)
    parsers = [cli.boss_parser(), cli.agent_parser(), cli.ctl_parser()]
    parsers += [sub for action in parsers[2]._actions if hasattr(action, "choices") and isinstance(
        action.choices, dict) for sub in action.choices.values()]
    for parser in parsers:
        for action in parser._actions:
            if action.help == "==SUPPRESS==" or action.dest == "help":
                continue
            for option in action.option_strings:
                if option.startswith("--"):
                    assert f"`{option}" in text or f"{option}`" in text or f" {option} " in text, \
                        f"{parser.prog} {option} is in no page of docs/"
            if isinstance(action.choices, dict):  # taylorism-ctl's commands
                for command in action.choices:
                    assert f"`{command}" in text, f"taylorism-ctl {command} is in no page of docs/"


def test_every_public_name_and_argument_is_in_the_api_page():
    text = (ROOT / "docs" / "api.md").read_text()
    for name in taylorism_zmq.__all__:
        assert any(f in text for f in (f"`{name}", f"{name}(", f"taylorism_zmq.{name}")), \
            f"taylorism_zmq.{name} is not in docs/api.md"
    documented = [taylorism_zmq.run_as_server, taylorism_zmq.batch_main, taylorism_zmq.Boss,
                  taylorism_zmq.Boss.attach, taylorism_zmq.install_as_taylorism]
    documented += [member for name, member in vars(taylorism_zmq.Boss).items()
                   if not name.startswith("_") and inspect.isfunction(member)]
    for function in documented:
        assert f"{function.__name__}(" in text or f"`{function.__name__}`" in text, function
        for parameter in inspect.signature(function).parameters:
            if parameter not in ("self", "cls") and not parameter.startswith("_"):
                assert re.search(rf"`{parameter}`|\b{parameter}=", text), \
                    f"{function.__qualname__}({parameter}=) is not in docs/api.md"


def test_every_benchmark_command_of_the_docs_names_a_script_and_flags_it_takes():
    command = re.compile(r"python (benchmarks/\w+\.py)((?: --?[\w-]+(?: [\w.]+)*)*)")
    named = [m for page in (README, *DOCS) for m in command.findall(page.read_text())]
    assert len({script for script, _ in named}) >= 8, named  # every script of the performance page
    for script, args in named:
        assert (ROOT / script).is_file(), script
        usage = subprocess.run([sys.executable, str(ROOT / script), "--help"], capture_output=True, text=True,
                               timeout=60, cwd=ROOT)
        assert usage.returncode == 0, usage.stderr
        for flag in re.findall(r"--[\w-]+", args):
            assert flag in usage.stdout, f"{script} takes no {flag}"


def test_the_operations_print_config_example_prints_a_toml_table_saying_where_each_value_came_from(tmp_path):
    (block,) = blocks_of_section(ROOT / "docs" / "operations.md", "Settings: flags, environment, config file", "sh")
    (line,) = commands(block)
    env = dict(clean_env(tmp_path), TAYLORISM_AGENT_TIMEOUT="45")
    done = subprocess.run(argv(line), env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    from taylorism_zmq.config_file import tomllib  # (tomli before Python 3.11)

    table = tomllib.loads(done.stdout)["boss"]
    assert table["agent-timeout"] == 45.0 and table["control"] == "tcp://127.0.0.1:5555"
    assert "agent-timeout = 45.0    # environment TAYLORISM_AGENT_TIMEOUT" in done.stdout
