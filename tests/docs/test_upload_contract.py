"""docs/upload-contract.md tells the truth: its examples decode to what it says, the receiver
answers them as shown, its tables match the code."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cbor2
import pytest

from edge.contract import (
    CONTRACT_VERSION,
    GAP_REASONS,
    ContractError,
    UnknownDictionary,
    _exponent,
    decode_ack,
    decode_batch,
)
from edge.ingest.receiver import Receiver, ReceiverSettings
from edge.model import OBSERVATION_NAMESPACE, observation_id
from edge.quantities import QUANTITIES
from edge.uplinks.status import status_document
from tests.docs.contract_example import decoded_view, diag, example_ack, example_session

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "upload-contract.md").read_text(encoding="utf-8")
REGENERATE = "regenerate the example with: .venv/bin/python -m tests.docs.contract_example"


def _block(marker: str) -> str:
    found = re.search(rf"<!-- example:{marker} -->\n```[a-z]*\n(.*?)```", DOC, re.S)
    assert found, f"no ```{marker}``` block after <!-- example:{marker} -->"
    return found.group(1)


def _hex(marker: str) -> bytes:
    return bytes.fromhex("".join(_block(marker).split()))


def _first() -> bytes:
    return _hex("hex")


def test_example_hex_decodes_to_the_documented_observations() -> None:
    decoded = decode_batch(_first())
    assert decoded_view(decoded) == json.loads(_block("decoded"))
    assert decoded.dictionary is not None


def test_second_batch_needs_the_dictionary_of_the_first() -> None:
    carried = decode_batch(_first()).dictionary
    assert carried is not None
    with pytest.raises(UnknownDictionary) as err:
        decode_batch(_hex("hex2"))
    need = f"`{{\"ver\": 2, \"need\": [[h'{err.value.ref.hex()}', 1046, 1047]]}}`"
    assert need in DOC
    second = decode_batch(_hex("hex2"), lambda gw, ref: carried if ref == carried.ref else None)
    assert [(o.sequence, o.result, o.stream.quantity_code) for o in second.observations] == [
        (1046, 24.5, "pm10"), (1047, 25.25, "pm10")]


def test_example_diagnostic_notation_matches_the_bytes() -> None:
    for marker in ("", "2"):
        assert diag(cbor2.loads(_hex("hex" + marker))) + "\n" == _block("diag" + marker)
    assert diag(cbor2.loads(_hex("ack-hex"))) + "\n" == _block("ack-diag")


def test_examples_are_what_the_encoder_produces_today() -> None:
    first, second = example_session()
    assert (_first(), _hex("hex2"), _hex("ack-hex")) == (first, second, example_ack()), (
        REGENERATE)
    assert f"Its {len(first)} bytes" in DOC and f"{len(second)} bytes:" in DOC
    assert f"({len(example_ack())} bytes on" in DOC


async def test_the_receiver_answers_the_example_with_the_documented_ack(tmp_path: Path) -> None:
    receiver = Receiver(ReceiverSettings(store_path=tmp_path / "twin.db"))
    try:
        acks = await receiver.handle("duet/v1/gw-gent-0001/obs", _first())
    finally:
        await receiver.close()
    assert acks == {"gw-gent-0001": decode_ack(_hex("ack-hex"))}


def test_example_gaps() -> None:
    decoded = decode_batch(_first())
    assert len(decoded.observations) == 3
    assert decoded.gaps == [(1000, 1039, 40, "evicted:size"), (1040, 1041, -1, "restart:unclean")]


def test_documented_namespace_and_example_id() -> None:
    assert str(OBSERVATION_NAMESPACE) in DOC
    assert f"`gw-gent-0001/1042` → `{observation_id('gw-gent-0001', 1042)}`" in DOC


def _table_keys(heading: str) -> set[str]:
    section = DOC.split(heading, 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([a-z0-9]+)` +\|", section, re.M))


def test_every_key_of_the_batch_and_the_ack_is_documented() -> None:
    first, second = example_session()
    documented = _table_keys("## The compact batch")
    assert set(cbor2.loads(first)) | set(cbor2.loads(second)) <= documented
    assert {"ver", "gw", "sent", "sr", "st", "qn", "s0", "sd", "t0", "dt", "si", "val", "dur",
            "rt", "raw", "qk", "qs", "qv", "gaps", "q"} == documented
    assert _table_keys("## Acks") == {"ver", "ok", "x", "need"}


def test_every_gap_reason_is_documented() -> None:
    documented = set(re.findall(r"^\| `([a-z:-]+)` \|", DOC.split("## Gaps", 1)[1], re.M))
    assert set(GAP_REASONS) <= documented


def test_status_example_has_the_fields_the_gateway_sends() -> None:
    example = json.loads(DOC.split("## Status and events", 1)[1].split("```json\n", 1)[1]
                         .split("```", 1)[0])
    gateway = {"started_ms": 1, "buffer_depth": 40, "oldest_unsent_ms": 2, "evicted": 0,
               "dead_lettered": 0,
               "sources": [{"name": "pm-sds011", "state": "connected", "last_frame_ms": 3}]}
    uplink = {"state": "connected", "confirm": "twin", "awaiting_ack": 40,
              "last_confirmed_ms": 4}
    real = json.loads(status_document("online", gateway, uplink))
    assert set(example) == set(real)
    assert set(example["uplink"]) == set(real["uplink"])
    assert set(example["sensors"]["pm-sds011"]) == set(real["sensors"]["pm-sds011"])


def test_quantity_table_matches_edge_quantities() -> None:
    rows = re.findall(
        r"^\| `([a-z0-9_]+)` \| (.+?) \| `([^`]*)` \| (.+?) \| (-?\d+) \| (\S+) \|$", DOC, re.M
    )
    table = {code: (label, unit, symbol, int(exp), uri) for code, label, unit, symbol, exp, uri
             in rows}
    expected = {
        q.code: (q.label, q.unit, q.unit_symbol, _exponent(q.code), q.uri)
        for q in QUANTITIES.values()
    }
    assert table == expected, "quantity table in docs/upload-contract.md is stale"


def test_version_rejection_message_is_the_documented_one() -> None:
    message = cbor2.loads(example_session()[0])
    message["ver"] = CONTRACT_VERSION + 1
    with pytest.raises(ContractError) as err:
        decode_batch(cbor2.dumps(message))
    assert f"`{err.value}`" in DOC.replace("\n  ", " ")
