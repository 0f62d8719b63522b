"""What a job's launcher starts from on this agent: the code environment the client sent (checked by the rule
the boss checks it by: it comes from the network) with what the agent adds to it (its host, its caps, the trust
of the link, the variables it keeps, the Unix user the job's owner maps to)."""

from __future__ import annotations

from typing import Any

from ..launch.isolation import user_problem
from ..wire.code_env import env_problem


class JobRefused(Exception):
    """A RUN whose tasks this agent does not start: *why* for the agent's log, *told* for the tasks' reports."""

    def __init__(self, why: str, told: str):
        super().__init__(why)
        self.why, self.told = why, told


def launcher_env(body: dict[str, Any], host: str, run_as_client_user: bool, max_report: int,
                 max_output: int, trusted_link: bool, keep_env: tuple[str, ...],
                 checked: bool = False) -> dict[str, Any]:
    """The launcher environment of a RUN's job; JobRefused if it cannot run here.

    *checked*: the job's code environment is one found good already (the RUNs of a job carry the same).
    """
    problem = None if checked else env_problem(body["env"])
    if problem is not None:
        raise JobRefused(f"has a malformed code environment: {problem}",
                         f"malformed code environment for the job: {problem}")
    env = dict(body["env"], host=host)
    if run_as_client_user:
        problem = user_problem(body["user"])
        if problem is not None:
            raise JobRefused(f"refused: {problem}", f"agent on host {host} refused the job: {problem}")
        env["run_as"] = body["user"]
    env["max_report"], env["max_output"] = max_report, max_output
    env["trusted"] = body["trusted"] and trusted_link  # a launcher takes things by value only from a trusted job
    if keep_env:
        env["keep_env"] = list(keep_env)
    return env
