"""Hypothesis: random bytes never crash the gateway's node decoder or session."""

from __future__ import annotations

import contextlib

import cbor2
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.node import nodeproto as P
from edge.node.ble import decode_node_advert
from edge.node.session import NodeSession
from edge.node.store import HwmStore

STORE = HwmStore(":memory:")


def _session() -> NodeSession:
    return NodeSession("gw", "nodes", STORE, lambda: 1_764_000_000_000)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_never_crash_the_session(data: bytes) -> None:
    session = _session()
    result = session.feed(data)
    assert session.bad["internal"] == 0
    for reply in result.replies:
        assert reply.endswith(b"\x00")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_random_cobs_blocks_raise_only_protocol_errors(block: bytes) -> None:
    try:
        P.decode_message(block)
    except P.ProtocolError as exc:
        assert exc.reason in {"cobs", "short", "version", "crc", "type", "cbor", "schema",
                              "oversize"}


cbor_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64) + 1, 2**64 - 1)
    | st.floats(width=32, allow_nan=False) | st.text(max_size=20) | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.integers(0, 10) | st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 8), cbor_values)
def test_valid_frames_with_random_bodies_are_accepted_or_schema_rejected(
        mtype: int, body: object) -> None:
    frame = P.build_frame(mtype, body if isinstance(body, dict) else {1: body})
    try:
        P.decode_message(frame[:-1])
    except P.ProtocolError as exc:
        assert exc.reason == "schema"
    session = _session()
    session.feed(frame)
    assert session.bad["internal"] == 0


@settings(max_examples=150, deadline=None)
@given(cbor_values)
def test_cbor_round_trip_and_cbor2_agreement(value: object) -> None:
    data = P.cbor_dumps(value)
    assert P.cbor_loads(data) == cbor2.loads(data)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=40))
def test_random_adverts_never_crash(payload: bytes) -> None:
    with contextlib.suppress(P.ProtocolError):
        decode_node_advert({0xFFFF: payload})


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000))
def test_cobs_round_trip(data: bytes) -> None:
    enc = P.cobs_encode(data)
    assert 0 not in enc
    assert P.cobs_decode(enc) == data
