"""Wire protocol and payload codec: round trips and rejection of bad input."""

from __future__ import annotations

import datetime
import math

import footprints
import msgpack
import numpy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taylorism_zmq.wire import protocol
from taylorism_zmq.wire.codec import Codec
from taylorism_zmq.wire.protocol import Msg, ProtocolError


class Opaque:
    def __init__(self, x):
        self.x = x

    def __eq__(self, other):
        return isinstance(other, Opaque) and other.x == self.x


@pytest.mark.parametrize("value", [
    (1, "a", (2.5, None)),
    {1, 2, 3},
    frozenset({"a"}),
    footprints.FPList([1, (2, 3)]),
    footprints.FPDict(a=1, b=[2]),
    footprints.FPSet([1, 2]),
    footprints.FPTuple((1, 2)),
    datetime.datetime(2024, 2, 29, 12, 30, 1, 5),
    datetime.datetime(2024, 2, 29, tzinfo=datetime.timezone.utc),
    datetime.date(2024, 2, 29),
    datetime.timedelta(days=2, seconds=3, microseconds=4),
    {1: "int key", (1, 2): "tuple key", "s": b"bytes"},
    2**80,
    complex(1, -2),
])
def test_codec_round_trips_taylorism_values(value):
    codec = Codec(trusted=False)
    back = codec.loads(codec.dumps(value))
    assert back == value
    assert type(back) is type(value)


def test_codec_round_trips_numpy():
    codec = Codec()
    arr = numpy.arange(12, dtype=numpy.float32).reshape(3, 4)
    back = codec.loads(codec.dumps({"a": arr, "s": numpy.int16(7)}))
    assert back["a"].dtype == numpy.float32 and back["a"].shape == (3, 4)
    assert (back["a"] == arr).all()
    assert back["s"] == 7 and back["s"].dtype == numpy.int16


def test_codec_sends_functions_by_reference():
    codec = Codec()
    from taylorism_zmq.schedulers import binding_setup

    assert codec.loads(codec.dumps([binding_setup])) == [binding_setup]


def test_untrusted_link_refuses_arbitrary_objects_naming_the_value():
    with pytest.raises(TypeError, match="Opaque.*untrusted link"):
        Codec(trusted=False).dumps({"k": [Opaque(1)]})


def test_trusted_link_pickles_arbitrary_objects_but_untrusted_decoder_refuses_them():
    data = Codec(trusted=True).dumps({"k": Opaque(3)})
    assert Codec(trusted=True).loads(data) == {"k": Opaque(3)}
    with pytest.raises(ValueError, match="pickle payload refused"):
        Codec(trusted=False).loads(data)


def test_codec_rejects_garbage_with_value_error():
    with pytest.raises(ValueError):
        Codec().loads(b"\xc1\xc1\xc1")
    with pytest.raises(ValueError):
        Codec().loads(msgpack.packb(msgpack.ExtType(1, b"\xc1")))


def test_protocol_round_trip():
    body = {"job": "j", "tasks": [[0, "w", "m:C", 1.5, 0, ["f"], b"payload", b"k" * 32]], "classes": {}}
    kind, back = protocol.decode(protocol.encode(Msg.ADD_TASKS, body))
    assert kind is Msg.ADD_TASKS and back == body


@pytest.mark.parametrize("frames,reason", [
    ([protocol.VERSION_FRAME, bytes([Msg.PING])], "expected 3 frames"),
    ([bytes([protocol.VERSION + 1]), bytes([Msg.PING]), msgpack.packb({})], "protocol version"),
    ([protocol.VERSION_FRAME, b"\xee", msgpack.packb({})], "unknown message type"),
    ([protocol.VERSION_FRAME, bytes([Msg.PING]), b"\xc1"], "malformed msgpack"),
    ([protocol.VERSION_FRAME, bytes([Msg.PING]), msgpack.packb([1, 2])], "not a map"),
    ([protocol.VERSION_FRAME, bytes([Msg.PING]), msgpack.packb({1: 2})], "malformed msgpack"),
    ([protocol.VERSION_FRAME, bytes([Msg.CONTROL]), msgpack.packb({"job": "j"})], "lacks field"),
    ([protocol.VERSION_FRAME, bytes([Msg.CONTROL]), msgpack.packb({"job": 3, "action": "end"})], "wrong type"),
    ([protocol.VERSION_FRAME, bytes([Msg.ADD_TASKS]), msgpack.packb({"job": "j", "tasks": [[0, "w"]]})], "wrong type"),
    ([protocol.VERSION_FRAME, bytes([Msg.HEARTBEAT]),
      msgpack.packb({"agent": "a", "load": [True], "cpu": 1, "mem_avail": 1, "running": 0})], "wrong type"),
])
def test_protocol_rejects_bad_frames(frames, reason):
    with pytest.raises(ProtocolError, match=reason):
        protocol.decode(frames)


def test_a_submit_may_carry_its_first_tasks_checked_as_add_tasks_rows():
    body = {"job": "j", "name": "j", "policy": {}, "env": {}, "trusted": True, "shm_host": None, "halted": False,
            "resubmit": False, "detach": False, "timeout": None, "stream": False, "started": False, "max_tasks": 1}
    assert protocol.decode(protocol.encode(Msg.SUBMIT, body)) == (Msg.SUBMIT, body)  # (without: as before)
    rows = [[0, "w", "m:C", 1.5, 0, ["f"], b"payload", b"k" * 32]]
    assert protocol.decode(protocol.encode(Msg.SUBMIT, dict(body, tasks=rows, classes={})))[1]["tasks"] == rows
    for bad in ({"tasks": [[0, "w"]]}, {"tasks": "rows"}, {"tasks": rows, "classes": []}):
        with pytest.raises(ProtocolError, match="wrong type"):
            protocol.decode(protocol.encode(Msg.SUBMIT, dict(body, **bad)))


def test_protocol_rejects_oversized_frames():
    frames = protocol.encode(Msg.ERROR, {"message": "x" * 1000})
    with pytest.raises(ProtocolError, match="exceeds"):
        protocol.decode(frames, max_frame=100)


@pytest.mark.parametrize("kind", [Msg.PEER_STATE, Msg.REPL_ACK, Msg.TAKEOVER, Msg.NOT_ACTIVE])
def test_the_small_messages_of_a_pair_stay_small(kind):
    """A pair's beats, acknowledgements and takeovers are capped as the other small kinds (64 KiB), whatever
    the frame cap: a peer cannot make a boss unpack megabytes of them."""
    frames = protocol.encode(kind, {"boss": "x" * (70 << 10)})
    with pytest.raises(ProtocolError, match="exceeds 65536"):
        protocol.decode(frames)


def test_refused_is_readable_across_versions():
    frames = [b"\x07", bytes([Msg.REFUSED]), msgpack.packb({"message": "go away"})]
    assert protocol.decode(frames) == (Msg.REFUSED, {"message": "go away"})
    assert protocol.version_of(frames) == 7


@settings(max_examples=400, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=5))
def test_decode_raises_only_protocol_errors_on_random_frames(frames):
    try:
        protocol.decode(frames)
    except ProtocolError:
        pass


TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=8)
ANY = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats() | TEXT | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4), max_leaves=12)
_OF_TYPE = {str: TEXT, int: st.integers(-2**63, 2**63 - 1), float: st.floats(), bool: st.booleans(),
            bytes: st.binary(max_size=8), type(None): st.none(), dict: st.dictionaries(TEXT, ANY, max_size=3)}


def well_typed(spec):
    """Values that a field of this schema spec accepts."""
    if isinstance(spec, protocol.Rows):
        return st.lists(st.tuples(*(well_typed(f) for f in spec.fields)).map(list), max_size=3)
    if isinstance(spec, protocol.ListOf):
        return st.lists(well_typed(spec.kind), max_size=3)
    return st.one_of(*(_OF_TYPE[k] for k in (spec if isinstance(spec, tuple) else (spec,))))


def conforms(spec, value) -> bool:
    """A reference check, written apart from the decoder's: msgpack gives exact types, bool is not an int."""
    if isinstance(spec, protocol.Rows):
        return type(value) is list and all(
            type(row) is list and len(row) == len(spec.fields) and all(map(conforms, spec.fields, row))
            for row in value)
    if isinstance(spec, protocol.ListOf):
        return type(value) is list and all(conforms(spec.kind, v) for v in value)
    if type(value) is float and not math.isfinite(value):
        return False  # NaN and infinities, in no field
    return type(value) in (spec if isinstance(spec, tuple) else (spec,))


@st.composite
def bodies(draw):
    """A message type and a body with every field of its schema well typed; then, in two cases out of three,
    one field (anywhere in the schema) replaced by anything or left out."""
    kind = draw(st.sampled_from(list(Msg)))
    body = {field: draw(well_typed(spec)) for field, spec in protocol.SCHEMAS[kind].items()}
    change = draw(st.sampled_from(["none", "retype", "remove"]))
    if change != "none" and body:
        field = draw(st.sampled_from(sorted(body)))
        if change == "retype":  # near misses (a bool for an int, bytes for a str...) as often as anything
            body[field] = draw(st.sampled_from([True, False, 0, 1, 1.5, "", "x", b"x", None, [], {}, [[]]]) | ANY)
        else:
            del body[field]
    return kind, body


@settings(max_examples=600, deadline=None)
@given(bodies())
def test_decode_accepts_exactly_the_bodies_whose_every_field_has_its_type(kind_body):
    kind, body = kind_body
    frames = [protocol.VERSION_FRAME, bytes([kind]), msgpack.packb(body)]
    schema = protocol.SCHEMAS[kind]
    expected = all(f in body and conforms(spec, body[f]) for f, spec in schema.items())
    try:
        decoded_kind, decoded = protocol.decode(frames)
        assert decoded_kind is kind and msgpack.packb(decoded) == frames[2]  # (bytes: NaN is not equal to NaN)
        accepted = True
    except ProtocolError:
        accepted = False
    assert accepted == expected, (kind, body)


NEAR_MISSES = [True, False, 0, -1, 1.5, float("nan"), "", "x", b"", b"x", None, [], {}, [[]], [[0]], [0]]


def _example(spec):
    """One value a field of this spec accepts."""
    if isinstance(spec, protocol.Rows):
        return [[_example(f) for f in spec.fields]]
    if isinstance(spec, protocol.ListOf):
        return [_example(spec.kind)]
    first = (spec if isinstance(spec, tuple) else (spec,))[0]
    return {str: "s", int: 1, float: 1.0, bool: True, bytes: b"b", type(None): None, dict: {}}[first]


@pytest.mark.parametrize("kind", list(Msg))
def test_every_field_takes_exactly_its_types_among_near_misses(kind):
    """Each field of each message, in turn, given each near miss while the others are right (and the same
    inside one row of a row field); the fields a message may carry are checked alike where present."""
    schema = {**protocol.SCHEMAS[kind], **protocol.OPTIONAL.get(kind, {})}
    good = {f: _example(spec) for f, spec in schema.items()}
    assert protocol.decode([protocol.VERSION_FRAME, bytes([kind]), msgpack.packb(good)])[0] is kind
    cases = []
    for field, spec in schema.items():
        for value in NEAR_MISSES:
            cases.append((dict(good, **{field: value}), conforms(spec, value)))
            if isinstance(spec, protocol.Rows):
                for i, cell_spec in enumerate(spec.fields):
                    row = list(good[field][0])
                    row[i] = value
                    cases.append((dict(good, **{field: [row]}), conforms(cell_spec, value)))
    for body, expected in cases:
        try:
            protocol.decode([protocol.VERSION_FRAME, bytes([kind]), msgpack.packb(body)])
            accepted = True
        except ProtocolError:
            accepted = False
        assert accepted == expected, (kind.name, body)


def test_untrusted_references_may_not_import_new_modules():
    import msgpack as mp

    from taylorism_zmq.wire import codec as codec_module

    data = mp.packb(mp.ExtType(codec_module.REF, mp.packb("antigravity:fly")))
    with pytest.raises(ValueError, match="refused on an untrusted link"):
        Codec(trusted=False).loads(data)
    assert Codec(trusted=False).loads(Codec().dumps(datetime.datetime)) is datetime.datetime  # imported already
