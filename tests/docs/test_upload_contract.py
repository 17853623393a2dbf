"""docs/upload-contract.md tells the truth: its example decodes to what it says, its tables match
the code."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cbor2
import pytest

from edge.contract import CONTRACT_VERSION, ContractError, _exponent, decode_batch
from edge.model import OBSERVATION_NAMESPACE, observation_id
from edge.quantities import QUANTITIES
from tests.docs.contract_example import decoded_view, diag, example_payload

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "upload-contract.md").read_text(encoding="utf-8")
REGENERATE = "regenerate the example with: .venv/bin/python -m tests.docs.contract_example"


def _block(marker: str) -> str:
    found = re.search(rf"<!-- example:{marker} -->\n```[a-z]*\n(.*?)```", DOC, re.S)
    assert found, f"no ```{marker}``` block after <!-- example:{marker} -->"
    return found.group(1)


def _payload_from_doc() -> bytes:
    return bytes.fromhex("".join(_block("hex").split()))


def test_example_hex_decodes_to_the_documented_observations() -> None:
    decoded = decode_batch(_payload_from_doc())
    assert decoded_view(decoded) == json.loads(_block("decoded"))


def test_example_diagnostic_notation_matches_the_bytes() -> None:
    assert diag(cbor2.loads(_payload_from_doc())) + "\n" == _block("diag")


def test_example_is_what_the_encoder_produces_today() -> None:
    assert _payload_from_doc() == example_payload(), REGENERATE
    assert f"The {len(example_payload())} bytes" in DOC


def test_example_size_claim() -> None:
    decoded = decode_batch(_payload_from_doc())
    assert len(decoded.observations) == 3
    assert decoded.gaps == [(1000, 1039, 40, "evicted:size")]


def test_documented_namespace_and_example_id() -> None:
    assert str(OBSERVATION_NAMESPACE) in DOC
    assert f"`gw-gent-0001/1042` → `{observation_id('gw-gent-0001', 1042)}`" in DOC


def test_every_key_of_the_batch_is_documented() -> None:
    message = cbor2.loads(example_payload())
    documented = set(re.findall(r"^\| `([a-z0-9]+)` +\|", DOC, re.M))
    assert set(message) <= documented
    assert {"ver", "gw", "sent", "st", "s0", "sd", "t0", "dt", "si", "val", "dur", "rt", "raw",
            "q", "gaps"} <= documented


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
    message = cbor2.loads(example_payload())
    message["ver"] = CONTRACT_VERSION + 1
    with pytest.raises(ContractError) as err:
        decode_batch(cbor2.dumps(message))
    assert f"`{err.value}`" in DOC.replace("\n  ", " ")
