"""What taylorism-ctl prints of a status: a key without the admin role sees other users' jobs as counts."""

from taylorism_zmq.cli import format_jobs


def _job(jid: str) -> dict:
    return {"job": jid, "name": "mine", "client": "alice@head", "done": 3, "running": 1, "pending": 2, "failed": 0,
            "age": 4.0}


def test_other_users_jobs_show_as_counts_without_ids():
    text = format_jobs({"jobs": [_job("job-aaaa")], "other_jobs": {"jobs": 2, "running": 5, "pending": 7}})
    assert "job-aaaa" in text
    assert text.splitlines()[-1] == "and 2 job(s) of other users: 5 task(s) running, 7 pending"


def test_no_job_of_ones_own_and_none_of_others():
    text = format_jobs({"jobs": [], "other_jobs": {"jobs": 0, "running": 0, "pending": 0}})
    assert text.splitlines()[1:] == ["(no jobs)"]


def test_an_admin_status_has_no_other_jobs_line():
    text = format_jobs({"jobs": [_job("job-bbbb")]})
    assert len(text.splitlines()) == 2 and "other users" not in text
