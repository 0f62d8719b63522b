"""daemons/: the systemd units verified by systemd, the Slurm scripts run by a real single-node Slurm."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from conftest import free_port, wait_until

from taylorism_zmq.processes import stop_processes

DAEMONS = Path(__file__).resolve().parent.parent / "daemons"
#: the CPUs the test's Slurm node offers: fewer than the machine's, so that an agent's slots show where they
#: came from (Slurm's allocation, not the cpu count)
SLURM_CPUS = max(1, (os.cpu_count() or 2) - 1)
SLURM_BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "salloc", "srun", "sinfo", "scontrol")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("unit", ["taylorism-boss.service", "taylorism-agent.service"])
def test_systemd_units_verify(unit, tmp_path):
    text = (DAEMONS / unit).read_text()
    assert "Restart=on-failure" in text and "User=taylorism" in text
    # the units run the commands of the virtualenv VIRTUAL_ENV names: point it at this installation
    text = text.replace("VIRTUAL_ENV=/opt/taylorism", f"VIRTUAL_ENV={sys.prefix}")
    (tmp_path / unit).write_text(text)
    done = subprocess.run(["systemd-analyze", "verify", str(tmp_path / unit)], capture_output=True, text=True,
                          timeout=60)
    problems = [line for line in (done.stdout + done.stderr).splitlines() if unit in line]
    assert done.returncode == 0 and not problems, done.stdout + done.stderr


@pytest.mark.parametrize("unit", ["taylorism-boss.service", "taylorism-agent.service"])
def test_units_run_from_a_virtualenv_with_room_for_descriptors(unit):
    """No command path of one installation (/usr/local/bin): the virtualenv VIRTUAL_ENV names; and more than
    systemd's default 1024 descriptors (a boss holds one per connected agent and client)."""
    service = unit_service(unit)
    assert "/usr/local/bin" not in (DAEMONS / unit).read_text()
    assert '"$VIRTUAL_ENV/bin/taylorism-' in service["ExecStart"]
    assert "VIRTUAL_ENV=" in service["Environment"]
    assert int(service["LimitNOFILE"]) >= 65536


def test_systemd_verify_would_catch_a_broken_restart_directive(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    broken = (DAEMONS / "taylorism-boss.service").read_text().replace("Restart=on-failure", "Restart=sometimes")
    (tmp_path / "broken.service").write_text(broken)
    done = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "broken.service")], capture_output=True,
                          text=True, timeout=60)
    assert "broken.service" in done.stderr and "Failed to parse service restart specifier" in done.stderr, \
        done.stdout + done.stderr


# -- what Restart=on-failure does with the daemons' ends (systemd.service(5), no running systemd needed) ------
#: the Restart= values that start a service again after each kind of end ("Table 2. Exit causes and the effect
#: of the Restart= settings" in systemd.service(5); timeouts and watchdogs do not concern these units)
RESTARTED_AFTER = {
    "clean exit": {"always", "on-success"},
    "unclean exit code": {"always", "on-failure"},
    "unclean signal": {"always", "on-failure", "on-abnormal", "on-abort"},
}
RESTART_VALUES = ("no", "always", "on-success", "on-failure", "on-abnormal", "on-abort", "on-watchdog")
#: a main process killed by one of these ends its service cleanly, as exit status 0 does (systemd.service(5))
CLEAN_SIGNALS = {signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE}
#: what the README's "Restart=on-failure" stands for: a daemon killed, or that fails (e.g. at start, its port
#: taken or its keys missing), is started again; one ended by its KillSignal (systemctl stop, an operator's
#: kill) stays stopped
PROMISE = {"ended by its KillSignal": False, "killed": True, "failed": True}


def exit_cause(returncode: int, success: frozenset[int] = frozenset()) -> str:
    """How systemd classes the end of a main process with this returncode (negative: killed by that signal)."""
    if returncode < 0:
        return "clean exit" if -returncode in CLEAN_SIGNALS else "unclean signal"
    return "clean exit" if returncode == 0 or returncode in success else "unclean exit code"


def unit_service(unit: str) -> dict[str, str]:
    """The [Service] settings of a unit of daemons/ (the last of a repeated key, as systemd takes it)."""
    service: dict[str, str] = {}
    section = None
    for line in (DAEMONS / unit).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
        elif section == "Service":
            key, _, value = line.partition("=")
            service[key.strip()] = value.strip()
    return service


def exec_start(service: dict[str, str], boss: str, state_dir: Path) -> list[str]:
    """The unit's ExecStart with a boss of the test and a state directory of its own (its commands: those of
    the virtualenv its VIRTUAL_ENV names, set by the caller to this installation)."""
    command = service["ExecStart"].replace("/var/lib/taylorism", str(state_dir))
    command = command.replace("--control tcp://0.0.0.0 --port 5555", f"--control {boss}")
    if command.startswith("/bin/sh -c "):
        return ["/bin/sh", "-c", shlex.split(command[len("/bin/sh -c "):])[0]]
    return shlex.split(command)


def _run_unit(unit: str, scenario: str, cluster_factory, tmp_path: Path) -> tuple[int, str]:
    """Start the unit's daemon as systemd would, end it as *scenario* says; its returncode and log."""
    from taylorism_zmq.client.connection import Connection

    service = unit_service(unit)
    env = dict(os.environ)
    env.update(dict(item.split("=", 1) for item in shlex.split(service.get("Environment", ""))))
    # this installation's virtualenv, and no PATH to it: the unit finds its commands through VIRTUAL_ENV
    env.update(VIRTUAL_ENV=sys.prefix, PATH="/usr/bin:/bin")
    is_boss = unit == "taylorism-boss.service"
    if is_boss:
        boss, reports = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
        command = [*exec_start(service, boss, tmp_path), "--reports", reports]
    else:
        cluster = cluster_factory()
        env["TAYLORISM_BOSS"] = boss = cluster.control
        command = exec_start(service, boss, tmp_path / "state")
    held = None
    if scenario == "failed":
        if is_boss:  # its port is taken
            held = socket.socket()
            held.bind(("127.0.0.1", int(boss.rsplit(":", 1)[1])))
            held.listen()
        else:  # its keys are missing
            env["TAYLORISM_KEY_DIR"] = str(tmp_path / "no-keys")
    log = tmp_path / "daemon.log"
    proc = subprocess.Popen(command, env=env, cwd="/", stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=log.open("w"))
    try:
        if scenario != "failed":
            if is_boss:
                Connection(boss, timeout=30).close()  # it serves
            else:
                cluster.wait_agents(1, timeout=30)  # it registered
            kill = getattr(signal, service.get("KillSignal", "SIGTERM")) if scenario != "killed" else signal.SIGKILL
            proc.send_signal(kill)
        return proc.wait(timeout=30), log.read_text()
    finally:
        stop_processes([proc], grace=5)
        if held is not None:
            held.close()


@pytest.mark.parametrize("scenario", list(PROMISE))
@pytest.mark.parametrize("unit", ["taylorism-boss.service", "taylorism-agent.service"])
def test_restart_on_failure_restarts_a_failed_or_killed_daemon_not_a_stopped_one(unit, scenario, cluster_factory,
                                                                                  tmp_path):
    service = unit_service(unit)
    success = frozenset(int(x) for x in service.get("SuccessExitStatus", "").split() if x.isdigit())
    returncode, log = _run_unit(unit, scenario, cluster_factory, tmp_path)
    if scenario == "failed":  # for the reason the test gave it
        assert ("already in use" if unit == "taylorism-boss.service" else "taylorism-ctl keygen") in log, log
    cause = exit_cause(returncode, success)
    restarted = service.get("Restart", "no") in RESTARTED_AFTER[cause]
    assert restarted == PROMISE[scenario], (f"{unit} {scenario}: returncode {returncode} ({cause}) with "
                                            f"Restart={service.get('Restart', 'no')}")


def test_only_restart_on_failure_keeps_the_promise():
    """The check above fails for any other Restart= value (the daemons' ends as measured: 0 on SIGTERM,
    killed by SIGKILL, exit status 2 when they cannot start)."""
    causes = {"ended by its KillSignal": exit_cause(0), "killed": exit_cause(-signal.SIGKILL),
              "failed": exit_cause(2)}
    keeps = [value for value in RESTART_VALUES
             if all((value in RESTARTED_AFTER[causes[s]]) == PROMISE[s] for s in PROMISE)]
    assert keeps == ["on-failure"]


# -- a real Slurm ----------------------------------------------------------------------------
DRIVER = textwrap.dedent("""
    import os
    import socket
    import sys

    import taylorism_zmq as taylorism
    from taylorism_zmq import examples  # noqa: F401 - the Sleeper worker

    report = taylorism.batch_main(dict(sleeping_time=0.1), dict(wakeup_sentence=[f"hello {i}" for i in range(6)]),
                                  print_report=print)
    print("DRIVER DONE", len(report["workers_report"]), "reports, driver on", socket.gethostname())
    slots = [h["slots"] for h in taylorism.cluster_status()["hosts"]]
    print("AGENT SLOTS", slots, "SLURM CPUS", os.environ["SLURM_JOB_CPUS_PER_NODE"], "CPU COUNT", os.cpu_count())
""")


class Slurm:
    """munged, slurmctld and slurmd for one node (this machine), all in a temporary directory."""

    def __init__(self, root: Path):
        self.root = root
        self.node = socket.gethostname().split(".")[0]
        self.conf = root / "slurm.conf"
        self.procs: list[subprocess.Popen] = []
        self.env = dict(os.environ, SLURM_CONF=str(self.conf),
                        PATH=f"{os.path.dirname(sys.executable)}:{os.environ.get('PATH', '')}")

    def start(self) -> None:
        for d in ("state", "spool"):
            (self.root / d).mkdir()
        key = self.root / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        sock = self.root / "munge.sock"
        subprocess.run(["munged", "--force", f"--socket={sock}", f"--key-file={key}",
                        f"--pid-file={self.root / 'munged.pid'}", f"--log-file={self.root / 'munged.log'}",
                        f"--seed-file={self.root / 'munged.seed'}"], check=True, timeout=30, capture_output=True)
        ctld_port, d_port = free_port(), free_port()
        self.conf.write_text(textwrap.dedent(f"""
            ClusterName=taylorism-test
            SlurmctldHost={self.node}(127.0.0.1)
            SlurmctldPort={ctld_port}
            SlurmdPort={d_port}
            AuthType=auth/munge
            AuthInfo=socket={sock}
            CredType=cred/munge
            SlurmUser=root
            SlurmdUser=root
            StateSaveLocation={self.root / 'state'}
            SlurmdSpoolDir={self.root / 'spool'}
            SlurmctldPidFile={self.root / 'slurmctld.pid'}
            SlurmdPidFile={self.root / 'slurmd.pid'}
            SlurmctldLogFile={self.root / 'slurmctld.log'}
            SlurmdLogFile={self.root / 'slurmd.log'}
            ProctrackType=proctrack/linuxproc
            TaskPlugin=task/none
            SelectType=select/cons_tres
            SelectTypeParameters=CR_Core
            ReturnToService=2
            MpiDefault=none
            JobCompType=jobcomp/none
            AccountingStorageType=accounting_storage/none
            NodeName={self.node} NodeAddr=127.0.0.1 CPUs={SLURM_CPUS} State=UNKNOWN
            PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
        """))
        for command in (["slurmctld", "-D", "-f", str(self.conf)], ["slurmd", "-D", "-f", str(self.conf),
                                                                      "-N", self.node]):
            self.procs.append(subprocess.Popen(command, env=self.env, stdout=subprocess.DEVNULL,
                                               stderr=subprocess.STDOUT, start_new_session=True))

    def idle(self) -> bool:
        done = subprocess.run(["sinfo", "-h", "-o", "%t"], env=self.env, capture_output=True, text=True, timeout=10)
        return done.stdout.strip() == "idle"

    def log_tail(self) -> str:
        return "\n".join((self.root / f).read_text()[-1500:] for f in ("slurmctld.log", "slurmd.log")
                         if (self.root / f).exists())

    def run(self, command: list[str], port: int, timeout: float = 180) -> subprocess.CompletedProcess:
        env = dict(self.env, TAYLORISM_PORT=str(port))
        env.pop("TAYLORISM_BOSS", None)
        return subprocess.run(command, env=env, cwd=self.root, capture_output=True, text=True, timeout=timeout)

    def stop(self) -> None:
        subprocess.run(["scancel", "--full", "--user=root"], env=self.env, capture_output=True, timeout=30)
        stop_processes(self.procs, grace=20)
        pidfile = self.root / "munged.pid"
        if pidfile.exists():
            try:
                os.kill(int(pidfile.read_text().strip()), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass


@pytest.fixture(scope="module")
def slurm(tmp_path_factory) -> Iterator[Slurm]:
    missing = [b for b in SLURM_BINARIES if shutil.which(b) is None]
    if missing:
        pytest.skip(f"Slurm is not installed here (missing {', '.join(missing)}; "
                    "apt-get install slurmctld slurmd slurm-client munge)")
    if os.geteuid() != 0:
        pytest.skip("a single-node Slurm cluster needs root to start slurmd")
    cluster = Slurm(tmp_path_factory.mktemp("slurm"))
    try:
        try:
            cluster.start()
            wait_until(cluster.idle, 60, "the Slurm node to be idle")
        except (subprocess.SubprocessError, AssertionError, OSError) as exc:
            pytest.skip(f"Slurm could not be started here: {exc}\n{cluster.log_tail()}")
        yield cluster
    finally:
        cluster.stop()


def _no_daemons_left(port: int) -> bool:
    """No taylorism boss or agent of this run outlived its Slurm job."""
    for p in psutil.process_iter(["cmdline", "status"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if p.info["status"] != psutil.STATUS_ZOMBIE and "taylorism-" in cmd and str(port) in cmd:
            return False
    return True


def _check_job_output(text: str) -> None:
    assert "DRIVER DONE 6 reports" in text, text[-3000:]
    # the driver started once the agent had registered (taylorism-ctl wait), and the agent took Slurm's CPUs
    assert text.index("1 agent(s) registered") < text.index("DRIVER DONE"), text[-3000:]
    slots = re.search(r"AGENT SLOTS \[(\d+)\] SLURM CPUS (\d+) CPU COUNT (\d+)", text)
    assert slots and slots.group(1) == slots.group(2) == str(SLURM_CPUS), text[-3000:]
    for i in range(6):
        assert f"hello {i} Woke up after 0.1 s sleep" in text, text[-3000:]
    assert "joined from host" in text  # the agent started by srun registered with the boss


def test_sbatch_script_runs_a_driver_on_a_real_slurm(slurm):
    (slurm.root / "driver.py").write_text(DRIVER)
    port = free_port()
    submitted = slurm.run(["sbatch", "--parsable", "--nodes=1", f"--output={slurm.root}/sbatch-%j.out",
                           str(DAEMONS / "slurm-taylorism.sbatch"), str(slurm.root / "driver.py")], port)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr + slurm.log_tail()
    job = submitted.stdout.strip().split(";")[0]

    def ended() -> str | None:
        """The job's record once it has ended (sbatch --wait polls for it too, but seconds apart)."""
        shown = slurm.run(["scontrol", "show", "job", job], port).stdout
        state = re.search(r"JobState=(\S+)", shown)
        return shown if state and state.group(1) not in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING") else None

    record = str(wait_until(ended, 180, f"batch job {job} to end"))
    text = (slurm.root / f"sbatch-{job}.out").read_text() if (slurm.root / f"sbatch-{job}.out").exists() else ""
    # what sbatch --wait's exit code said: the job completed and its script exited 0
    assert "JobState=COMPLETED" in record and "ExitCode=0:0" in record, record + text + slurm.log_tail()
    _check_job_output(text)
    wait_until(lambda: _no_daemons_left(port), 30, "the boss and agents to end with the job")


def test_salloc_script_runs_a_driver_on_a_real_slurm(slurm):
    (slurm.root / "driver.py").write_text(DRIVER)
    port = free_port()
    done = slurm.run(["salloc", "--nodes=1", str(DAEMONS / "slurm-taylorism-salloc.sh"),
                      str(slurm.root / "driver.py")], port)
    assert done.returncode == 0, done.stdout + done.stderr + slurm.log_tail()
    _check_job_output(done.stdout + done.stderr)
    wait_until(lambda: _no_daemons_left(port), 30, "the boss and agents to end with the allocation")


def test_an_agent_in_a_slurm_job_takes_its_slots_from_the_allocation():
    from test_settings import settings_of

    slurm = "Slurm's allocation on this node (SLURM_CPUS_ON_NODE)"
    assert settings_of("agent", env={"SLURM_CPUS_ON_NODE": "3"})["slots"] == (3, slurm)
    assert settings_of("agent", "--slots", "5", env={"SLURM_CPUS_ON_NODE": "3"})["slots"] == (5, "command line")
    assert settings_of("agent")["slots"] == (None, "default: the cpu count")
