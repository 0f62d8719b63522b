"""The boss's live status page: its JSON, and the page itself in a real headless browser."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request

import footprints
import pytest
import zt_workers  # noqa: F401 - registers the test worker classes
from conftest import free_port, wait_until

from taylorism_zmq import batch_main, run_as_server
from taylorism_zmq.wire import security

TOKEN = "test-token-for-the-status-page"


@pytest.fixture
def page_cluster(cluster_factory):
    (security.key_dir() / "http-token").write_text(TOKEN)
    port = free_port()
    cluster = cluster_factory(http=f"127.0.0.1:{port}")
    cluster.add_agent(slots=2, host_name="node-a")
    cluster.add_agent(slots=2, host_name="node-b")
    cluster.wait_agents(2)
    base = f"http://127.0.0.1:{port}"
    yield cluster, base
    (security.key_dir() / "http-token").unlink()


def get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.read()


def test_status_json_shows_hosts_jobs_failures_and_timeline(page_cluster):
    cluster, base = page_cluster
    with pytest.raises(urllib.error.HTTPError) as denied:
        get(f"{base}/api/status?token=wrong")
    assert denied.value.code == 401
    boss = run_as_server(dict(zt="nap", seconds=0.3), dict(tag=list(range(6)), fail=["no"] * 5 + ["value"]),
                         scheduler=footprints.proxy.scheduler(limit="threads", max_threads=1), boss=cluster.control)
    with pytest.raises(ValueError):
        boss.wait_till_finished()

    def snapshot():
        return json.loads(get(f"{base}/api/status?token={TOKEN}")[1])

    wait_until(lambda: snapshot()["failures"], 10, "the failure on the page")
    s = snapshot()
    assert {h["host"] for h in s["hosts"]} == {"node-a", "node-b"}
    failure = s["failures"][-1]
    assert failure["host"] in ("node-a", "node-b") and "failed on purpose" in failure["traceback"]
    assert {row[0] for row in s["timeline"]} <= {"node-a", "node-b"} and len(s["timeline"]) >= 2
    assert all(row[3] <= row[4] for row in s["timeline"])
    agents = {h["agent"] for h in s["hosts"]}
    assert {row[6] for row in s["timeline"]} <= agents  # each task's agent, for the lanes
    assert {row[7] for row in s["timeline"]} == {boss.job_id}  # and its job's name (unnamed: its id)
    assert s["running"] == []
    assert failure["stderr"] == ""  # that worker wrote nothing
    with pytest.raises(ValueError):
        batch_main(dict(zt="talk", lines=2, fail=True), dict(name=["noisy"]), boss=cluster.control,
                   scheduler=footprints.proxy.scheduler(limit="threads", max_threads=1), print_report=lambda r: None)
    wait_until(lambda: snapshot()["failures"][-1]["name"] == "noisy", 10, "the second failure on the page")
    assert snapshot()["failures"][-1]["stderr"] == "noisy err 0\nnoisy err 1\n"  # what it wrote last


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no headless browser here (.ci/run installs Debian's chromium)")


def _browse(browser: str, url: str, shot=None) -> str:
    """The page's DOM once its script ran (and a screenshot of it, if asked), from a headless browser."""
    profile = tempfile.mkdtemp(prefix="chromium-")
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--virtual-time-budget=4000", "--window-size=1200,1000"]
    try:
        if shot is not None:
            subprocess.run([*flags, f"--screenshot={shot}", url], capture_output=True, timeout=60)
        return subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=60).stdout
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def test_the_page_in_a_headless_browser_while_a_job_runs(page_cluster, tmp_path):
    browser = _chromium()
    cluster, base = page_cluster
    earlier = run_as_server(dict(zt="nap", seconds=0.2), dict(tag=list(range(4))), boss=cluster.control,
                            scheduler=footprints.proxy.scheduler(limit="threads", max_threads=2), name="warm-up")
    earlier.wait_till_finished()
    boss = run_as_server(dict(zt="nap", seconds=2.5), dict(tag=list(range(16))), boss=cluster.control,
                         scheduler=footprints.proxy.scheduler(limit="threads", max_threads=2), name="naps")
    boss.make_them_work()

    def some_done():
        jobs = json.loads(get(f"{base}/api/status?token={TOKEN}")[1])["jobs"]
        return jobs and jobs[0]["done"] >= 4

    wait_until(some_done, 20, "some tasks done")
    shot = tmp_path / "page.png"
    dom = _browse(browser, f"{base}/?token={TOKEN}", shot)
    assert shot.exists() and shot.stat().st_size > 10_000
    if os.environ.get("TAYLORISM_TEST_SCREENSHOT"):
        shutil.copy(shot, os.environ["TAYLORISM_TEST_SCREENSHOT"])
    assert 'data-host="node-a"' in dom and 'data-host="node-b"' in dom
    assert dom.count('data-agent="agent-node-') >= 2  # each agent a row of its own
    assert 'class="job"' in dom and "data-done=" in dom  # progress
    # the task stream: a lane per slot of each agent (2 agents of 2 slots), running tasks drawn as they run
    lanes = re.findall(r'class="lane" data-agent="(agent-node-[ab]-[^"]+)" data-slot="(\d+)"', dom)
    assert len({a for a, _ in lanes}) == 2 and {slot for _, slot in lanes} >= {"0", "1"}, lanes
    assert f'class="task running" data-job="{boss.job_id}"' in dom
    assert f'class="task done" data-job="{boss.job_id}"' in dom
    # a legend of the jobs, and a window that fits the live job (a few seconds, not 5 minutes)
    assert f'class="legend-job" data-job="{boss.job_id}"' in dom
    window = float(re.search(r'data-window="([\d.]+)"', dom).group(1))
    assert 1 <= window < 60, window
    # the job's page: its tasks, newest first, with state, host and duration
    job_dom = _browse(browser, f"{base}/?token={TOKEN}&job={boss.job_id}")
    rows = re.findall(r'<tr class="task" data-state="(\w+)" data-start="([\d.]+)">', job_dom)
    assert {state for state, _ in rows} >= {"running", "done"}, rows
    starts = [float(start) for _, start in rows]
    assert starts == sorted(starts, reverse=True)
    assert "node-a" in job_dom and "node-b" in job_dom and " s so far" in job_dom
    assert f'data-job="{earlier.job_id}"' not in job_dom.split('id="failures"')[0]  # that job's page only
    boss.stop_them_working()
    boss.wait_till_finished()


# -- issue 21 (10): the token, and clients that dribble ----------------------------------------------------
def test_the_pages_token_is_never_logged_and_is_kept_for_admins(cluster_factory, tmp_path, monkeypatch):
    """The token was logged at INFO, and with it the page shows every user's jobs and failures: it is an
    admin's, kept in the key directory (0600), never in a log."""
    monkeypatch.delenv("TAYLORISM_HTTP_TOKEN", raising=False)
    kept = security.key_dir() / "http-token"
    kept.unlink(missing_ok=True)
    log = tmp_path / "boss.log"
    port = free_port()
    try:
        cluster_factory(http=f"127.0.0.1:{port}", boss_log=str(log))
        wait_until(lambda: log.exists() and "status page" in log.read_text(), 20, "the page to be served")
        token = kept.read_text().strip()
        assert len(token) >= 20 and (kept.stat().st_mode & 0o777) == 0o600
        assert token not in log.read_text() and str(kept) in log.read_text()
        assert get(f"http://127.0.0.1:{port}/api/status?token={token}")[0] == 200
    finally:
        kept.unlink(missing_ok=True)


def dribble(port: int, n: int, stop: threading.Event) -> list[socket.socket]:
    """*n* connections that send one byte of a request's head every 4 s, until *stop*."""
    sockets = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]

    def drip() -> None:
        head = b"GET /api/status HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"y" * 100
        for byte in head:
            for s in sockets:
                try:
                    s.send(bytes([byte]))
                except OSError:
                    pass
            if stop.wait(4):
                return

    threading.Thread(target=drip, daemon=True).start()
    return sockets


def test_clients_dribbling_their_request_do_not_close_the_page_to_others(page_cluster):
    """16 connections dribbling a header byte every 4 s closed every page request for 20 s."""
    _cluster, base = page_cluster
    port = int(base.rsplit(":", 1)[1])
    stop = threading.Event()
    sockets = dribble(port, 16, stop)
    try:
        time.sleep(1.0)  # (every thread of the page taken by a dribbler)
        start = time.monotonic()
        for _ in range(5):
            assert get(f"{base}/api/status?token={TOKEN}")[0] == 200
        took = time.monotonic() - start
        wait_until(lambda: all(s.recv(1, socket.MSG_DONTWAIT | socket.MSG_PEEK) == b"" for s in sockets
                               if _readable(s)) and all(_readable(s) for s in sockets), 15,
                   "the dribblers to be let go")
    finally:
        stop.set()
        for s in sockets:
            s.close()
    print(f"\n16 dribbling connections: 5 page requests took {took:.2f} s")
    assert took < 5


def _readable(sock: socket.socket) -> bool:
    try:
        sock.recv(1, socket.MSG_DONTWAIT | socket.MSG_PEEK)
        return True
    except BlockingIOError:
        return False
    except OSError:
        return True
