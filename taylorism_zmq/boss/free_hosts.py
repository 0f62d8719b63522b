"""The index of agents with a free slot, most headroom first: what dispatch asks, in O(log hosts).

A heap of ``(-headroom, seq, agent id)``; an entry is valid while its ``seq`` is the agent's latest, so an
agent whose slots or load change is pushed again rather than searched for, and stale entries are skipped
when met and swept when they outnumber the valid ones.  Agents that free slots while reports come in are
re-indexed once, before the next dispatch, not once per report.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator

from .model import AgentRecord


class FreeHosts:
    """Agents with a free slot that are not draining."""

    def __init__(self) -> None:
        self._agents: dict[str, AgentRecord] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._seq_of: dict[str, int] = {}
        self._seq = 0
        #: agents whose slots were freed since the last dispatch, to re-index then
        self._freed: dict[str, AgentRecord] = {}

    def __bool__(self) -> bool:
        return bool(self._agents)

    def __len__(self) -> int:
        return len(self._agents)

    def __contains__(self, aid: str) -> bool:
        return aid in self._agents

    def __iter__(self) -> Iterator[AgentRecord]:
        return iter(list(self._agents.values()))

    def update(self, agent: AgentRecord) -> None:
        """Re-index an agent after its slots, load or state changed."""
        self._freed.pop(agent.aid, None)
        if agent.free > 0 and not agent.draining:
            self._agents[agent.aid] = agent
            self._seq += 1
            self._seq_of[agent.aid] = self._seq
            heapq.heappush(self._heap, (-agent.headroom, self._seq, agent.aid))
            if len(self._heap) > 4 * len(self._agents) + 64:
                self._heap = [e for e in self._heap if self._seq_of.get(e[2]) == e[1]]
                heapq.heapify(self._heap)
        else:
            self.remove(agent.aid)

    def freed(self, agent: AgentRecord) -> None:
        """Note that a slot of *agent* was freed: it is re-indexed at :meth:`update_freed`."""
        self._freed[agent.aid] = agent

    def has_freed(self) -> bool:
        """True if agents freed slots since the last dispatch (to re-index then)."""
        return bool(self._freed)

    def update_freed(self, live: dict[str, AgentRecord]) -> None:
        """Re-index the agents that freed slots (those still in *live*)."""
        freed, self._freed = self._freed, {}
        for aid, agent in freed.items():
            if live.get(aid) is agent:
                self.update(agent)

    def remove(self, aid: str) -> None:
        self._agents.pop(aid, None)
        self._seq_of.pop(aid, None)
        self._freed.pop(aid, None)

    def best(self, accept: Callable[[AgentRecord], bool]) -> AgentRecord | None:
        """The agent with the most headroom that *accept* takes (least recently indexed among equals).

        O(log hosts), plus one heap operation per agent *accept* turns down.
        """
        chosen, seen = None, []
        while self._heap:
            entry = heapq.heappop(self._heap)
            if self._seq_of.get(entry[2]) != entry[1]:
                continue  # stale: the agent changed since
            seen.append(entry)
            agent = self._agents[entry[2]]
            if accept(agent):
                chosen = agent
                break
        for entry in seen:
            heapq.heappush(self._heap, entry)
        return chosen

    def check(self, agents: dict[str, AgentRecord]) -> None:
        """Assert the index agrees with the agents (the agents freed since the last dispatch may lag)."""
        for aid, agent in agents.items():
            if aid not in self._freed:
                assert (aid in self._agents) == (agent.free > 0 and not agent.draining), aid
        assert all(agents.get(aid) is agent for aid, agent in self._agents.items()), "only live agents"
        valid = [e for e in self._heap if self._seq_of.get(e[2]) == e[1]]
        assert sorted(e[2] for e in valid) == sorted(self._agents), "one valid heap entry per free agent"
        assert all(-e[0] == agents[e[2]].headroom for e in valid if e[2] not in self._freed), "heap keys are current"
