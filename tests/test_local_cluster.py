"""A cluster on this machine in one command (issue 24, item 2): ``taylorism-ctl local``, ``LocalCluster``, and the
embedded default's status page."""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request

import footprints
import psutil
import pytest
import zt_workers  # noqa: F401 - registers the test worker classes
from conftest import alive, free_port, wait_until

from taylorism_zmq import LocalCluster, batch_main, cluster_status, run_as_server

BIN = pathlib.Path(sys.executable).parent
TESTS = pathlib.Path(__file__).resolve().parent
HOST = socket.gethostname().split(".")[0]


def threads(n: int):
    return footprints.proxy.scheduler(limit="threads", max_threads=n)


def quiet(_report) -> None:
    pass


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""


class Foreground:
    """``taylorism-ctl local ...`` run as a user runs it in a shell, its output read as it comes."""

    def __init__(self, *args: str, env: dict | None = None):
        self.proc = subprocess.Popen([str(BIN / "taylorism-ctl"), "local", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env, cwd="/")
        self.out: list[str] = []
        self.err: list[str] = []
        self.readers = [read_lines(self.proc.stdout, self.out), read_lines(self.proc.stderr, self.err)]

    def line(self, pattern: str, timeout: float = 60) -> re.Match:
        """The first line of its stdout that matches *pattern*, once it has printed it."""
        def found():
            if self.proc.poll() is not None and not any(re.match(pattern, x) for x in self.out):
                raise AssertionError(f"it exited ({self.proc.returncode}): {''.join(self.out + self.err)}")
            return next((m for m in (re.match(pattern, x) for x in list(self.out)) if m), None)
        return wait_until(found, timeout, f"a line like {pattern!r}")  # type: ignore[return-value]

    def tree(self) -> list[int]:
        """Its process and every one below it (the boss, the agents, their launchers and tasks)."""
        me = psutil.Process(self.proc.pid)
        return [me.pid, *(p.pid for p in me.children(recursive=True))]

    def stop(self, sig: int) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            for reader in self.readers:
                reader.join(timeout=10)


def read_lines(stream, lines: list[str]) -> threading.Thread:
    """Append what *stream* says to *lines*, line by line, from a thread of its own (ends with the stream)."""
    reader = threading.Thread(target=lambda: lines.extend(iter(stream.readline, "")), daemon=True)
    reader.start()
    return reader


def own_local_dirs() -> set[str]:
    return {name for name in os.listdir(tempfile.gettempdir()) if name.startswith("taylorism-local-")}


PROGRAM = """\
import footprints
from taylorism_zmq import batch_main, examples

batch_main(dict(sleeping_time=0.1), dict(name=[f"t{i}" for i in range(8)]),
           scheduler=footprints.proxy.scheduler(limit="threads", max_threads=2), name="my-program")
"""


def test_the_readme_recipe_a_local_cluster_in_one_command(tmp_path):
    """taylorism-ctl local in one shell; in another, the line it printed, a program, taylorism-ctl status."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", 5555))
        except OSError:
            pytest.skip("port 5555, the recipe's, is taken on this machine")
    (tmp_path / "my_program.py").write_text(PROGRAM)
    shell1 = Foreground("--agents", "2", "--slots", "2", "--http")
    try:
        exported = shell1.line(r"^export TAYLORISM_BOSS=(\S+)$").group(1)
        assert exported == "tcp://127.0.0.1:5555"
        url = shell1.line(r"^Status page: (http://127\.0\.0\.1:\d+/\?token=\S+)$").group(1)
        shell2 = dict(os.environ, TAYLORISM_BOSS=exported)
        program = subprocess.run([sys.executable, "my_program.py"], cwd=tmp_path, env=shell2, capture_output=True,
                                 text=True, timeout=120)
        assert program.returncode == 0, program.stderr
        assert program.stdout.count("WORKER NAME: t") == 8
        status = subprocess.run([str(BIN / "taylorism-ctl"), "status"], env=shell2, capture_output=True, text=True,
                                timeout=60)
        assert status.returncode == 0, status.stderr
        rows = {line.split()[0]: line.split() for line in status.stdout.splitlines()
                if line.startswith(f"{HOST}-")}
        assert sorted(rows) == [f"{HOST}-1", f"{HOST}-2"]  # two agents, of two slots, ...
        assert all(row[2].endswith("/2") for row in rows.values())  # (HOST AGENT SLOTS ... DONE)
        done = [int(row[6]) for row in rows.values()]
        assert sum(done) == 8 and min(done) >= 1, status.stdout  # ... that shared the program's tasks
        assert get(url)[0] == 200
        tree = shell1.tree()
    finally:
        code = shell1.stop(signal.SIGINT)  # Ctrl-C
    assert code == 0, shell1.err
    wait_until(lambda: not any(alive(pid) for pid in tree), 20, "every process it started to end")


def test_ctl_local_makes_keys_serves_its_page_and_stops_everything_on_sigterm(tmp_path, monkeypatch):
    keys = tmp_path / "keys"  # none yet
    env = dict(os.environ, TAYLORISM_KEY_DIR=str(keys))
    before = own_local_dirs()
    local = Foreground("--agents", "3", "--slots", "1", "--port", "0", "--http", env=env)
    try:
        address = local.line(r"^export TAYLORISM_BOSS=(tcp://127\.0\.0\.1:\d+)$").group(1)
        assert local.line(rf"^export TAYLORISM_KEY_DIR={re.escape(str(keys))}$")
        assert local.line(r"^Made a key pair in ")
        assert (keys / "id.key_secret").is_file() and list((keys / "authorized").iterdir())
        url = local.line(r"^Status page: (\S+)$").group(1)
        api = url.replace("/?", "/api/status?")
        wait_until(lambda: len(json.loads(get(api)[1])["hosts"]) == 3, 10, "the page to show the three agents")
        assert get(url.split("?")[0])[0] == 401  # not without its token
        assert len(own_local_dirs() - before) == 1
        tree = local.tree()
        assert len(tree) >= 5  # itself, the boss, three agents (and their launchers)
        monkeypatch.setenv("TAYLORISM_KEY_DIR", str(keys))  # a program of that shell
        hosts = cluster_status(address, timeout=30)["hosts"]
        monkeypatch.undo()
        assert sorted((h["host"], h["slots"]) for h in hosts) == [(f"{HOST}-{i}", 1) for i in (1, 2, 3)]
    finally:
        code = local.stop(signal.SIGTERM)
    assert code == 0, local.err
    assert local.out[-1].strip() == "Stopped."
    wait_until(lambda: not any(alive(pid) for pid in tree), 20, "every process it started to end")
    assert own_local_dirs() == before  # the agents' journals and the rest: removed


def test_a_local_cluster_block_is_where_the_calls_inside_it_go(monkeypatch):
    monkeypatch.setenv("TAYLORISM_BOSS", "tcp://127.0.0.1:9")  # a configured boss: the block's comes first
    before = own_local_dirs()
    with LocalCluster(agents=2, slots=1) as cluster:
        pids = [p.pid for p in (cluster.boss, *cluster.agents)]
        directory = cluster.directory
        assert cluster.address.startswith("tcp://127.0.0.1:") and cluster.url is None
        report = batch_main(dict(zt="nap", seconds=0.5), dict(tag=list(range(4))), scheduler=threads(1),
                            print_report=quiet, name="in-the-block")
        assert sorted(r["report"]["host"] for r in report["workers_report"]) == [f"{HOST}-1"] * 2 + [f"{HOST}-2"] * 2
        server = run_as_server(dict(zt="nap", seconds=30), dict(tag=[1]), scheduler=threads(1), name="server")
        status = cluster_status()
        assert sorted(h["host"] for h in status["hosts"]) == [f"{HOST}-1", f"{HOST}-2"]
        assert [(j["name"], j["running"]) for j in status["jobs"]] == [("server", 1)]  # (a finished job is gone)
        server.stop_them_working()
        server.wait_till_finished()
    wait_until(lambda: not any(alive(pid) for pid in pids), 20, "the boss and agents to end")
    assert not os.path.exists(directory) and own_local_dirs() == before


EMBEDDED_PAGE = """\
import sys
sys.path.insert(0, {tests!r})
import footprints, zt_workers
from taylorism_zmq import batch_main
http = {http}
for job in ("first", "second"):
    batch_main(dict(zt="nap", seconds=1.5), dict(tag=[1, 2]), name=job, print_report=lambda r: None,
               scheduler=footprints.proxy.scheduler(limit="threads", max_threads=2), **http)
print("ENDED", flush=True)
"""


@pytest.mark.parametrize("how", ["env", "arg"])
def test_the_embedded_default_serves_its_page_when_asked_and_says_where_once(how):
    port = free_port()
    env = dict(os.environ, TAYLORISM_HTTP=str(port)) if how == "env" else dict(os.environ)
    env.pop("TAYLORISM_BOSS", None)
    http = {"http": port} if how == "arg" else {}
    proc = subprocess.Popen([sys.executable, "-c", EMBEDDED_PAGE.format(tests=str(TESTS), http=http)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd="/")
    out: list[str] = []
    err: list[str] = []
    readers = [read_lines(proc.stdout, out), read_lines(proc.stderr, err)]
    try:
        line = wait_until(lambda: next((x for x in err if "status page at" in x), None), 60, "the page's URL")
        url = re.search(r"(http://127\.0\.0\.1:(\d+)/\?token=\S+)", line)  # type: ignore[arg-type]
        assert url and int(url.group(2)) == port
        api = url.group(1).replace("/?", "/api/status?")
        wait_until(lambda: [h["host"] for h in json.loads(get(api)[1] or b"{}").get("hosts", [])] == ["localhost"],
                   30, "the page to show the embedded agent")
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for reader in readers:
            reader.join(timeout=10)
    assert proc.returncode == 0 and out[-1].strip() == "ENDED", "".join(err)
    assert sum("status page at" in x for x in err) == 1  # said once, for both jobs


def test_an_embedded_page_that_cannot_be_served_is_said_and_done_without():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        env = dict(os.environ, TAYLORISM_HTTP=str(busy.getsockname()[1]))
        env.pop("TAYLORISM_BOSS", None)
        done = subprocess.run([sys.executable, "-c", EMBEDDED_PAGE.format(tests=str(TESTS), http={})],
                              capture_output=True, text=True, env=env, cwd="/", timeout=120)
    assert done.returncode == 0 and done.stdout.strip().endswith("ENDED"), done.stderr
    assert "the embedded boss serves no status page: cannot serve the status page at 127.0.0.1:" in done.stderr
    assert "status page at http" not in done.stderr
