"""--log-json lines carry the job, task, agent and host they are about; failure lines name the exception type
(#25 item 5)."""

from __future__ import annotations

import json
import subprocess
import sys

import footprints
import pytest
import zt_workers  # noqa: F401 - registers the test worker classes
from conftest import wait_until

from taylorism_zmq import batch_main


def records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_json_log_records_carry_job_task_agent_and_host(cluster_factory, tmp_path):
    boss_log, agent_log = tmp_path / "boss.log", tmp_path / "agent.log"
    cluster = cluster_factory(boss_log=str(boss_log), boss_args=("--log-json",))
    agent = subprocess.Popen([sys.executable, "-m", "taylorism_zmq", "agent", "--boss", cluster.control,
                              "--slots", "2", "--host-name", "vm", "--state-dir", cluster.state_dir,
                              "--log-json", "--log-file", str(agent_log), "--log-level", "INFO"],
                             stdin=subprocess.DEVNULL, cwd="/")
    cluster.agents.append(agent)
    cluster.wait_agents(1)
    with pytest.raises(ValueError):
        batch_main(dict(zt="nap", fail="value"), dict(tag=[1]), boss=cluster.control, print_report=lambda r: None,
                   scheduler=footprints.proxy.scheduler(limit="threads", max_threads=1), name="logged")
    failed = wait_until(lambda: [r for r in records(boss_log) if "failed on host" in r["message"]], 10,
                        "the failure in the boss's log")
    (line,) = failed
    # a job is named by its label (its name and a digest of its id: other users may read the log), never its id
    assert line["task"] and line["job"].startswith("'logged' #") and line["host"] == "vm"
    assert not any("job-" in str(r.get("job")) or "job-" in r["message"] for r in records(boss_log))
    assert line["agent"].startswith("agent-vm-")
    assert "ValueError: " in line["message"] and "failed on purpose" in line["message"]  # the exception type
    boss_records = records(boss_log)
    joined = [r for r in boss_records if "joined from host" in r["message"]]
    assert joined and joined[0]["agent"] == line["agent"] and joined[0]["host"] == "vm"
    assert any(r.get("job") == line["job"] and "submitted" in r["message"] for r in boss_records)
    assert all("job" not in r for r in boss_records if "listening" in r["message"])  # only where it applies
    agent_records = wait_until(lambda: records(agent_log), 10, "the agent's log")
    assert all(r["agent"] == line["agent"] and r["host"] == "vm" for r in agent_records), agent_records
