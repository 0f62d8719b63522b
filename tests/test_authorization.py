"""The boss's guard, with no sockets: which roles may send what, and whose a routing id is."""

from __future__ import annotations

import collections

import pytest

from taylorism_zmq.boss.authorization import Guard
from taylorism_zmq.boss.model import Refused
from taylorism_zmq.wire.keystore import LOCAL, Identity
from taylorism_zmq.wire.protocol import Msg

ALICE = Identity("key-alice", "alice", frozenset({"client"}))
NODE = Identity("key-node", "node17", frozenset({"agent"}))
ROOT = Identity("key-root", "operator", frozenset({"admin"}))


def guard() -> Guard:
    g = Guard(None, False, collections.Counter())
    return g


EVERYONE, CLIENTS, AGENTS, ADMINS = {"alice", "node17", "operator"}, {"alice", "operator"}, {"node17"}, {"operator"}
#: who may send each kind of message the boss reads, as the README's roles say (written out here: read from the
#: guard's own table, a role widened or dropped there would pass)
ROLES = {
    Msg.HELLO: EVERYONE, Msg.PING: EVERYONE,
    Msg.STATUS: CLIENTS, Msg.SUBMIT: CLIENTS, Msg.ADD_TASKS: CLIENTS, Msg.CONTROL: CLIENTS, Msg.ATTACH: CLIENTS,
    Msg.CLIENT_ALIVE: CLIENTS,
    Msg.ADMIN: ADMINS,
    Msg.REGISTER: AGENTS, Msg.GOODBYE: AGENTS, Msg.AGENT_REPORTS: AGENTS, Msg.HEARTBEAT: AGENTS,
    Msg.AGENT_OUTPUT: AGENTS,
}


@pytest.mark.parametrize("kind", sorted(ROLES, key=int))
def test_each_kind_needs_its_role(kind):
    g = guard()
    assert {who.name for who in (ALICE, NODE, ROOT) if _allowed(g, kind, who)} == ROLES[kind]


def _allowed(g: Guard, kind: Msg, who: Identity) -> bool:
    try:
        g.check(kind, f"route-{who.name}".encode(), who)
        return True
    except Refused as exc:
        assert "role" in str(exc) and who.name in str(exc)
        return False


def test_a_routing_id_belongs_to_the_identity_that_first_used_it():
    g = guard()
    g.check(Msg.HELLO, b"r1", ALICE)
    g.check(Msg.SUBMIT, b"r1", ALICE)
    with pytest.raises(Refused, match="another identity"):
        g.check(Msg.HELLO, b"r1", ROOT)  # even an admin cannot speak from another's connection
    assert g.route_of(b"r1", ALICE) and not g.route_of(b"r1", ROOT)


def test_peers_without_a_handshake_are_local_or_anonymous_with_every_role():
    assert guard().default.name == "anonymous"
    g = guard()
    g.default = LOCAL
    assert g.identify(object()) is LOCAL and LOCAL.roles == {"client", "agent", "admin", "boss"}


def test_agent_ids_stay_bound_to_their_key_within_a_bounded_memory():
    from taylorism_zmq.boss.agentkeys import AgentKeys

    book = AgentKeys(limit=2)
    book.remember("a", NODE.key, b"ra", live={"a"})
    book.remember("b", NODE.key, b"rb", live={"a"})
    with pytest.raises(Refused, match="registered by another key"):
        book.check("a", ALICE)
    book.check("a", NODE)
    book.check("never-seen", ALICE)  # an id nobody registered is free
    book.remember("c", NODE.key, b"rc", live={"a"})  # over the limit: the oldest gone agent is forgotten
    assert len(book) == 2 and book.get("a") == (NODE.key, b"ra") and book.get("c") == (NODE.key, b"rc")
    assert book.get("b") is None  # "b" left: forgotten, though the live "a" was older
    book.check("b", ALICE)  # and its id is free again
