"""Fair share between owners on a real boss and agent: a small job of one user is not starved by a big one."""

from __future__ import annotations

import os
import subprocess
import sys

import footprints
import zt_workers  # noqa: F401 - registers the test worker classes
from conftest import wait_until
from test_security import authorized_dir, make_user, wait_key_known

from taylorism_zmq import run_as_server

SMALL_JOB = """
import sys
sys.path.insert(0, sys.argv[1])
import footprints, zt_workers
from taylorism_zmq import batch_main
report = batch_main(dict(zt="nap", seconds=0.2, ledger=sys.argv[3]), dict(tag=[f"b{i}" for i in range(4)]),
                    scheduler=footprints.proxy.scheduler(limit="threads", max_threads=2), boss=sys.argv[2],
                    print_report=lambda r: None)
print(report["status"])
"""


def test_two_owners_on_one_agent_take_turns(cluster_factory, tmp_path):
    key_dir, name = make_user(tmp_path, {"client"})
    try:
        cluster = cluster_factory()
        cluster.add_agent(slots=2)
        cluster.wait_agents(1)
        wait_key_known(cluster, key_dir)
        ledger = tmp_path / "ledger"
        big = run_as_server(dict(zt="nap", seconds=0.2, ledger=str(ledger)), dict(tag=[f"a{i}" for i in range(60)]),
                            scheduler=footprints.proxy.scheduler(limit="threads", max_threads=2),
                            boss=cluster.control)
        wait_until(lambda: ledger.exists(), 15, "the big job to start")
        small = subprocess.run([sys.executable, "-c", SMALL_JOB, os.path.dirname(__file__), cluster.control,
                                str(ledger)], capture_output=True, text=True, timeout=120,
                               env=dict(os.environ, TAYLORISM_KEY_DIR=str(key_dir)))
        assert small.stdout.strip().splitlines()[-1] == "finished", small.stderr
        big.wait_till_finished()
        assert len(big.get_report()["workers_report"]) == 60
        order = ledger.read_text().split()  # the tags in the order the tasks started
        b_at = [i for i, tag in enumerate(order) if tag.startswith("b")]
        assert len(b_at) == 4
        assert b_at[-1] - b_at[0] <= 8, order  # the small job got every other slot
        assert len(order) - b_at[-1] > 10, order  # long before the big job's end
    finally:
        (authorized_dir() / f"{name}.key").unlink(missing_ok=True)
