"""What a task sees of the daemons above it, and what it leaves behind, tried as a hostile task would.

Tasks read no variable of the agent's (not even the exec-time block of /proc/self/environ, after making
themselves dumpable), nor the agent's own /proc entries where they share its uid; launchers and tasks hold
none of the agent's descriptors (its log file, its stdout and stderr); a root agent does not run tasks as root
unless told; and nothing a task starts (a new session, an orphan of a double fork, a daemon) outlives the
task, its launcher or its agent.  Users are made by the tests (useradd) where they need them.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import footprints
import pytest
from conftest import alive, wait_until
from test_run_as_user import client_keys
from zt_isolation import FORGED

from taylorism_zmq import batch_main, run_as_server

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="needs root")
needs_users = pytest.mark.skipif(not ROOT or shutil.which("useradd") is None, reason="needs root and useradd")

CLIENT = """
import importlib, json, sys
sys.path.insert(0, sys.argv[1])
import footprints
from taylorism_zmq import batch_main
importlib.import_module(sys.argv[5])
common, individual = json.loads(sys.argv[3]), json.loads(sys.argv[4])
try:
    report = batch_main(common, individual, boss=sys.argv[2], print_report=lambda r: None,
                        scheduler=footprints.proxy.scheduler(limit="threads", max_threads=1))
    print(json.dumps(report["workers_report"][0]["report"]))
except Exception as exc:
    print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
"""


def quiet(_report):
    pass


def threads(n: int):
    return footprints.proxy.scheduler(limit="threads", max_threads=n)


def secrets_env() -> tuple[dict[str, str], list[str]]:
    """The environment of an agent holding two secrets (one with a daemon's prefix), and the secrets."""
    secrets = [f"hunter2-{uuid.uuid4().hex}", f"tok-{uuid.uuid4().hex}"]
    env = dict(os.environ, AGENT_DB_PASSWORD=secrets[0], TAYLORISM_API_TOKEN=secrets[1])
    env.pop("PYTHONPATH", None)
    return env, secrets


def spawn_agent(cluster, *extra: str, env: dict | None = None, state_dir: str | None = None, out=None,
                prefix: tuple[str, ...] = ()) -> subprocess.Popen:
    """An agent of *cluster* started here (its environment, its output and its user are the test's)."""
    proc = subprocess.Popen([*prefix, sys.executable, "-m", "taylorism_zmq", "agent", "--boss", cluster.control,
                             "--slots", "2", "--heartbeat", "0.2", "--state-dir", state_dir or cluster.state_dir,
                             *extra, "--log-level", "INFO"],
                            stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env, cwd="/")
    cluster.agents.append(proc)
    return proc


def run_as(cluster, key_dir: Path, common: dict, individual: dict, module: str = "zt_isolation") -> dict:
    """A job run by a client of its own with the keys of *key_dir* (its workers in *module*): its one report,
    or its error."""
    def attempt():
        proc = subprocess.run([sys.executable, "-c", CLIENT, os.path.dirname(__file__), cluster.control,
                               json.dumps(common), json.dumps(individual), module], capture_output=True, text=True,
                              timeout=120, cwd="/", env=dict(os.environ, TAYLORISM_KEY_DIR=str(key_dir)))
        out = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else {"error": proc.stderr}
        return None if "authorized keys" in out.get("error", "") else out  # (the boss reloads keys each second)
    return wait_until(attempt, 30, "the client's job")  # type: ignore[return-value]


def readable_environs(snoop: dict) -> list[str]:
    return [snoop["self"], *(text for text in snoop["ancestors"].values() if text not in ("denied", "gone"))]


# -- what a task sees of the agent ----------------------------------------------------------------------------
def test_the_zygote_starts_from_the_hosts_variables_and_what_python_needs_only():
    from taylorism_zmq.launch.environ import zygote_environ

    agent = {"PATH": "/usr/bin", "LD_LIBRARY_PATH": "/opt/lib", "LC_ALL": "C", "HOME": "/home/agent",
             "SLURM_JOB_ID": "7", "TAYLORISM_BOSS": "tcp://h:5555", "TAYLORISM_KEY_DIR": "/k",
             "TAYLORISM_API_TOKEN": "t", "AGENT_DB_PASSWORD": "p", "AWS_SECRET_ACCESS_KEY": "s", "SITE_X": "x"}
    assert zygote_environ(agent, keep=("SITE_*",)) == {
        "PATH": "/usr/bin", "LD_LIBRARY_PATH": "/opt/lib", "LC_ALL": "C", "HOME": "/home/agent",
        "SLURM_JOB_ID": "7", "TAYLORISM_BOSS": "tcp://h:5555", "SITE_X": "x"}



@needs_users
def test_a_task_run_as_its_user_reads_no_variable_of_the_agent_even_dumpable(cluster_factory, two_users, tmp_path):
    (user, _), _ = two_users
    keys, name = client_keys(tmp_path, user)
    try:
        cluster = cluster_factory()
        env, secrets = secrets_env()
        spawn_agent(cluster, "--run-as-client-user", env=env)
        cluster.wait_agents(1)
        snoop = run_as(cluster, keys, dict(zt="snoop", escape=True), dict(name=["s"]))
        assert "error" not in snoop, snoop
        assert snoop["uid"] != 0 and snoop["self"] not in ("denied", "gone"), snoop
        for text in readable_environs(snoop):
            assert not any(secret in text for secret in secrets), text
            assert "TAYLORISM_KEY_DIR" not in text and "AGENT_DB_PASSWORD" not in text
        from taylorism_zmq.launch import cgroups

        if cgroups.usable() is None:  # its launcher's cgroup holds it: it cannot move itself out
            assert "/taylorism-" in snoop["cgroup"] and "/launcher-" in snoop["cgroup"], snoop["cgroup"]
            assert snoop["escape"] and set(snoop["escape"].values()) == {"denied"}, snoop["escape"]
    finally:
        (Path(os.environ["TAYLORISM_TEST_KEYS"]) / "authorized" / f"{name}.key").unlink(missing_ok=True)


@needs_root
def test_an_agent_sharing_its_uid_with_its_tasks_is_not_readable_by_them(cluster_factory):
    """An agent not run as root: its tasks run as its user, and must not read its /proc entries (it is not
    dumpable). The agent runs as nobody, with CAP_DAC_READ_SEARCH for this Python, which lives under /root here
    (the capability does not give the access the ptrace rules of /proc deny)."""
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv")
    prefix = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=+dac_read_search",
              "--ambient-caps=+dac_read_search")
    probe = subprocess.run([*prefix, sys.executable, "-c", "import taylorism_zmq"], capture_output=True, text=True,
                           timeout=60, cwd="/")
    if probe.returncode != 0:
        pytest.skip(f"this Python cannot run as user nobody: {probe.stderr.strip()[-200:]}")
    state = tempfile.mkdtemp(prefix="taylorism-test-nobody-")
    os.chown(state, 65534, 65534)
    try:
        cluster = cluster_factory()
        env, secrets = secrets_env()
        env["HOME"] = "/nonexistent"
        agent = spawn_agent(cluster, env=env, state_dir=state, prefix=prefix)
        cluster.wait_agents(1)
        report = batch_main(dict(zt="snoop"), dict(name=["s"]), scheduler=threads(1), boss=cluster.control,
                            print_report=quiet)
        snoop = report["workers_report"][0]["report"]
        assert snoop["uid"] == 65534
        # task, launcher, zygote, then the agent (setpriv execs it): its entries are closed to its tasks
        assert snoop["ancestors"][str(agent.pid)] == "denied", snoop["ancestors"][str(agent.pid)][:200]
        for text in readable_environs(snoop):
            assert not any(secret in text for secret in secrets), text
    finally:
        shutil.rmtree(state, ignore_errors=True)


@needs_users
def test_launchers_and_tasks_hold_none_of_the_agents_descriptors(cluster_factory, two_users, tmp_path):
    """A worker module writes a forged ERROR line, at import in its launcher, to every file and standard
    stream it holds: none reaches the agent's log file or its stdout and stderr, only the launchers' output
    file (--launcher-output, here its default in the state directory)."""
    (user, _), _ = two_users
    keys, name = client_keys(tmp_path, user)
    log, out = tmp_path / "agent.log", tmp_path / "agent.out"
    try:
        cluster = cluster_factory()
        with open(out, "wb") as out_file:
            spawn_agent(cluster, "--run-as-client-user", "--log-file", str(log), out=out_file)
        cluster.wait_agents(1)
        forged = run_as(cluster, keys, dict(zt="forge"), dict(name=["f"]), module="zt_forger")
        assert "error" not in forged, forged
        assert forged["launcher"] != forged["pid"]  # (imported in the launcher, before the task's fork)
        assert FORGED not in log.read_text(errors="replace")
        assert FORGED not in out.read_text(errors="replace")
        assert FORGED in (Path(cluster.state_dir) / "launchers.log").read_text(errors="replace")
        launcher_files = set(forged["launcher_fds"].values())
        assert not launcher_files & {str(log), str(out)}, forged["launcher_fds"]
        assert not [t for t in launcher_files if t.startswith(cluster.state_dir) and not t.endswith("launchers.log")]
        # a task holds its order and result pipes, stdin, and its two output pipes: nothing else
        task = {int(fd): target for fd, target in forged["fds"].items()}
        assert task[0] == "/dev/null" and all(task[fd].startswith("pipe:") for fd in (1, 2)), task
        assert len(task) == 5 and all(target.startswith("pipe:") for fd, target in task.items() if fd > 2), task
    finally:
        (Path(os.environ["TAYLORISM_TEST_KEYS"]) / "authorized" / f"{name}.key").unlink(missing_ok=True)


# -- root ---------------------------------------------------------------------------------------------------------
def _agent_alone(*args: str, env: dict, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "taylorism_zmq", "agent", "--boss", "tcp://127.0.0.1:9",
                           "--state-dir", tempfile.mkdtemp(prefix="taylorism-test-state-"), *args],
                          capture_output=True, text=True, timeout=timeout, cwd="/", env=env)


@needs_root
def test_a_root_agent_refuses_to_run_tasks_as_root_unless_told(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TAYLORISM_ALLOW_ROOT_TASKS"}
    refused = _agent_alone(env=env)
    assert refused.returncode == 2, refused.stderr
    assert "--run-as-client-user" in refused.stderr and "--allow-root-tasks" in refused.stderr, refused.stderr
    # told: it starts, and says in its log that tasks run as root
    log = tmp_path / "agent.log"
    proc = subprocess.Popen([sys.executable, "-m", "taylorism_zmq", "agent", "--boss", "tcp://127.0.0.1:9",
                             "--state-dir", str(tmp_path / "state"), "--allow-root-tasks", "--log-file", str(log)],
                            stdin=subprocess.DEVNULL, env=env, cwd="/")
    try:
        wait_until(lambda: log.exists() and "tasks run as root" in log.read_text(), 30, "the agent's warning")
        assert "WARNING" in next(line for line in log.read_text().splitlines() if "tasks run as root" in line)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_an_agent_whose_launchers_output_cannot_be_written_says_so_and_ends(tmp_path):
    done = _agent_alone("--launcher-output", str(tmp_path / "missing" / "launchers.log"), env=dict(os.environ))
    assert done.returncode == 2 and "launchers' output" in done.stderr and "missing" in done.stderr, done.stderr


# -- nothing a task starts outlives it --------------------------------------------------------------------------
def left_pids(path: Path) -> list[int]:
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def task_and_launcher(path: Path) -> list[int]:
    tasks = Path(str(path) + ".tasks")
    return [int(x) for x in tasks.read_text().split()] if tasks.exists() else []


def all_gone(pids: list[int], timeout: float = 15.0) -> None:
    wait_until(lambda: not [p for p in pids if alive(p)], timeout, f"the end of {pids}")


@pytest.fixture
def pids(tmp_path):
    """The file where ZtLeave tasks write what they leave: whatever still runs of it is killed after the test
    (no stray process when containment fails)."""
    path = tmp_path / "pids"
    yield path
    for pid in [*left_pids(path), *task_and_launcher(path)]:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_nothing_a_task_started_outlives_it_embedded(pids):
    report = batch_main(dict(zt="leave", pids=str(pids)), dict(name=["a", "b"]), scheduler=threads(2),
                        print_report=quiet)
    left = [p for entry in report["workers_report"] for p in entry["report"]["left"]]
    assert len(left) == 6 and sorted(left) == sorted(left_pids(pids))
    all_gone(left)


def test_nothing_a_task_started_outlives_it_in_a_reused_process(pids):
    report = batch_main(dict(zt="leave", pids=str(pids)), dict(name=["a", "b", "c"]), scheduler=threads(1),
                        print_report=quiet, max_tasks_per_process=10)
    reports = [entry["report"] for entry in report["workers_report"]]
    assert len({r["pid"] for r in reports}) == 1  # one process ran the three tasks in turn
    # each task found none of what the tasks before it in that process started
    assert [r["earlier_still_running"] for r in reports] == [[], [], []]
    all_gone(left_pids(pids))


@pytest.mark.parametrize("containment", ["auto", "off"])
def test_nothing_a_task_started_outlives_it_on_an_agent(cluster_factory, pids, containment):
    cluster = cluster_factory()
    cluster.add_agent(slots=2, extra=("--task-cgroups", containment))
    cluster.wait_agents(1)
    report = batch_main(dict(zt="leave", pids=str(pids)), dict(name=["a", "b"]), scheduler=threads(2),
                        boss=cluster.control, print_report=quiet)
    left = [p for entry in report["workers_report"] for p in entry["report"]["left"]]
    assert len(left) == 6
    all_gone(left)
    snoop = batch_main(dict(zt="snoop"), dict(name=["s"]), scheduler=threads(1), boss=cluster.control,
                       print_report=quiet)["workers_report"][0]["report"]
    from taylorism_zmq.launch import cgroups

    contained = "/taylorism-" in snoop["cgroup"]
    assert contained == (containment == "auto" and cgroups.usable() is None), snoop["cgroup"]


def test_nothing_a_task_started_outlives_its_timeout(cluster_factory, pids):
    cluster = cluster_factory()
    cluster.add_agent(slots=1)
    cluster.wait_agents(1)
    with pytest.raises(Exception, match="timeout"):
        batch_main(dict(zt="leave", pids=str(pids), seconds=60.0), dict(name=["slow"]), scheduler=threads(1),
                   boss=cluster.control, print_report=quiet, timeout=1.0)
    all_gone([*left_pids(pids), *task_and_launcher(pids)[:1]])


@pytest.mark.parametrize("victim,sig", [("agent", signal.SIGKILL), ("agent", signal.SIGTERM),
                                        ("launcher", signal.SIGKILL)])
@pytest.mark.parametrize("containment", ["auto", "off"])
def test_nothing_a_task_started_outlives_its_agent_or_launcher(cluster_factory, pids, victim, sig, containment):
    cluster = cluster_factory()
    agent = cluster.add_agent(slots=1, extra=("--task-cgroups", containment))
    cluster.wait_agents(1)
    boss = run_as_server(dict(zt="leave", pids=str(pids), seconds=60.0), dict(name=["long"]),
                         scheduler=threads(1), boss=cluster.control)
    boss.make_them_work()
    try:
        wait_until(lambda: len(left_pids(pids)) == 3 and task_and_launcher(pids), 30, "the task's processes")
        task, launcher = task_and_launcher(pids)
        os.kill(agent.pid if victim == "agent" else launcher, sig)
        all_gone([*left_pids(pids), task, launcher], timeout=20)
    finally:
        with contextlib.suppress(Exception):  # (a job whose task failed with its launcher)
            boss.stop_them_working()
    if victim == "agent":
        from taylorism_zmq.launch import cgroups

        agent.wait(timeout=30)
        if containment == "auto" and cgroups.usable() is None:
            if sig == signal.SIGKILL:  # it could not remove its cgroup: the next agent on the host does
                assert cgroups.owned_by(agent.pid)
                cluster.add_agent(slots=1)
            wait_until(lambda: not cgroups.owned_by(agent.pid), 15, "the agent's cgroups removed")


@needs_root
def test_tasks_run_under_the_agents_process_limit(cluster_factory):
    cluster = cluster_factory()
    cluster.add_agent(slots=1, extra=("--max-processes", "4321"))
    cluster.wait_agents(1)
    snoop = batch_main(dict(zt="snoop"), dict(name=["s"]), scheduler=threads(1), boss=cluster.control,
                       print_report=quiet)["workers_report"][0]["report"]
    assert snoop["nproc"] == [4321, 4321]
