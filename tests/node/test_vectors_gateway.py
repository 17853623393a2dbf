"""The shared vectors under CPython, through the gateway's import path; cbor2 agrees."""

from __future__ import annotations

import cbor2
import pytest

from edge.node import nodeproto as P
from edge.node.ble import decode_node_advert
from tests.node.conftest import load_vectors

FRAMES = load_vectors("frames.json")
INVALID = load_vectors("invalid.json")
ADVERTS = load_vectors("adverts.json")


@pytest.mark.parametrize("vector", FRAMES, ids=[v["name"] for v in FRAMES])
def test_frame_vectors(vector: dict[str, object]) -> None:
    wire = bytes.fromhex(str(vector["hex"]))
    assert wire.endswith(b"\x00") and wire.count(0) == 1
    blocks = P.FrameReader().feed(wire)
    assert P.decode_message(blocks[0]) == vector["message"]
    assert P.encode_message(dict(vector["message"])) == wire  # type: ignore[call-overload]


@pytest.mark.parametrize("vector", FRAMES, ids=[v["name"] for v in FRAMES])
def test_cbor2_decodes_the_same_body(vector: dict[str, object]) -> None:
    payload = P.cobs_decode(bytes.fromhex(str(vector["hex"]))[:-1])
    body = payload[2:-4]
    ours = P.cbor_loads(body)
    theirs = cbor2.loads(body)
    assert theirs == ours
    # and our deterministic encoding is what cbor2 produces in canonical mode, except that we
    # always use float32 (cbor2 picks the shortest float that round-trips)
    assert cbor2.loads(P.cbor_dumps(theirs)) == theirs


@pytest.mark.parametrize("vector", INVALID, ids=[v["name"] for v in INVALID])
def test_invalid_vectors(vector: dict[str, object]) -> None:
    blocks = P.FrameReader().feed(bytes.fromhex(str(vector["hex"])))
    if "error" in vector:
        with pytest.raises(P.ProtocolError) as err:
            P.decode_message(blocks[0])
        assert err.value.reason == vector["error"]
    else:
        assert P.decode_message(blocks[0]) == vector["message"]


@pytest.mark.parametrize("vector", ADVERTS, ids=[v["name"] for v in ADVERTS])
def test_advert_vectors(vector: dict[str, object]) -> None:
    raw = bytes.fromhex(str(vector["hex"]))
    assert P.decode_advert(raw) == vector["advert"]
    # bleak hands manufacturer data as {company id: payload without the id}
    advert = decode_node_advert({0xFFFF: raw[2:]})
    assert advert is not None
    expected = vector["advert"]
    assert isinstance(expected, dict)
    assert advert.node == expected["node"] and advert.seq == expected["seq"]
    assert [list(v) for v in advert.values] == expected["values"]


def test_cbor_subset_agrees_with_cbor2_on_floats_and_ints() -> None:
    for value in (0, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1, -1, -24, -25,
                  -(2**32), 1.5, -0.0, 1048576.5, "é", b"\x00\xff", [], {}, None, True, False):
        assert cbor2.loads(P.cbor_dumps(value)) == value
        assert P.cbor_loads(cbor2.dumps(value)) == value
    for half in (b"\xf9\x3c\x00", b"\xf9\xc4\x00", b"\xf9\x7c\x00", b"\xf9\x00\x01"):
        assert P.cbor_loads(half) == cbor2.loads(half)
    assert P.cbor_loads(cbor2.dumps(0.1)) == 0.1  # float64 decoded exactly
