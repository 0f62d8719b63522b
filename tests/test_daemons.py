"""daemons/: the systemd units verified by systemd, the Slurm scripts run by a real single-node Slurm."""

from __future__ import annotations

import os
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

from taylorism_zmq.procutil import stop_processes

DAEMONS = Path(__file__).resolve().parent.parent / "daemons"
SLURM_BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "salloc", "srun", "sinfo", "scontrol")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("unit", ["taylorism-boss.service", "taylorism-agent.service"])
def test_systemd_units_verify(unit, tmp_path):
    text = (DAEMONS / unit).read_text()
    assert "Restart=on-failure" in text and "User=taylorism" in text
    # the units name /usr/local/bin; systemd checks the command exists, so point it at this installation
    for command in ("taylorism-boss", "taylorism-agent"):
        installed = shutil.which(command)
        assert installed, f"{command} is not installed"
        text = text.replace(f"/usr/local/bin/{command}", installed)
    (tmp_path / unit).write_text(text)
    done = subprocess.run(["systemd-analyze", "verify", str(tmp_path / unit)], capture_output=True, text=True,
                          timeout=60)
    problems = [line for line in (done.stdout + done.stderr).splitlines() if unit in line]
    assert done.returncode == 0 and not problems, done.stdout + done.stderr


def test_systemd_verify_would_catch_a_broken_unit(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    broken = (DAEMONS / "taylorism-boss.service").read_text().replace("Restart=on-failure", "Restart=sometimes")
    (tmp_path / "broken.service").write_text(broken)
    done = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "broken.service")], capture_output=True,
                          text=True, timeout=60)
    assert "broken.service" in done.stdout + done.stderr


# -- a real Slurm ----------------------------------------------------------------------------
DRIVER = textwrap.dedent("""
    import socket
    import sys

    import taylorism_zmq as taylorism
    from taylorism_zmq import examples  # noqa: F401 - the Sleeper worker

    report = taylorism.batch_main(dict(sleeping_time=0.1), dict(wakeup_sentence=[f"hello {i}" for i in range(6)]),
                                  print_report=print)
    print("DRIVER DONE", len(report["workers_report"]), "reports, driver on", socket.gethostname())
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
            NodeName={self.node} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} State=UNKNOWN
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
    for i in range(6):
        assert f"hello {i} Woke up after 0.1 s sleep" in text, text[-3000:]
    assert "joined from host" in text  # the agent started by srun registered with the boss


def test_sbatch_script_runs_a_driver_on_a_real_slurm(slurm):
    (slurm.root / "driver.py").write_text(DRIVER)
    port = free_port()
    done = slurm.run(["sbatch", "--wait", "--nodes=1", f"--output={slurm.root}/sbatch-%j.out",
                      str(DAEMONS / "slurm-taylorism.sbatch"), str(slurm.root / "driver.py")], port)
    outputs = sorted(slurm.root.glob("sbatch-*.out"))
    text = outputs[-1].read_text() if outputs else ""
    assert done.returncode == 0, done.stdout + done.stderr + text + slurm.log_tail()
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
