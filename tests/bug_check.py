"""The suite fails a test during which a daemon logged a bug of its own (a pytest plugin: conftest uses it).

The daemons the tests start (a Cluster's, the embedded ones) log to the test process's stderr, which pytest
captures for each phase of each test; a Cluster whose boss logs to a file reads it when it closes
(:func:`bug_lines`).  A test that makes a daemon log a bug on purpose is marked ``expected_bug``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from taylorism_zmq.boss.daemon import BUG

_SEEN = pytest.StashKey[bool]()


def bug_lines(log: str) -> list[str]:
    """The lines of a daemon's log that say it met a bug of its own, each with the traceback that follows."""
    lines = log.splitlines()
    found = []
    for i, line in enumerate(lines):
        if BUG in line:
            found += lines[i:i + 40]
    return found


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "expected_bug: the test makes a daemon log a bug on purpose")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if item.get_closest_marker("expected_bug") or item.stash.get(_SEEN, False):
        return
    bugs = bug_lines(report.capstderr + "\n" + report.caplog)
    if bugs:
        item.stash[_SEEN] = True  # (said once, in the first phase that saw it)
        report.outcome = "failed"
        report.longrepr = "a daemon logged a bug during this test:\n" + "\n".join(bugs)
