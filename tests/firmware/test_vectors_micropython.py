"""The shared vectors under real MicroPython: the firmware's codec decodes and re-encodes them."""

from __future__ import annotations

import json

import pytest

from hil.micropython_vm import MicroPythonVM
from tests.firmware.conftest import load_vectors

FRAMES = load_vectors("frames.json")
INVALID = load_vectors("invalid.json")
ADVERTS = load_vectors("adverts.json")


def test_runs_on_micropython(vm: MicroPythonVM) -> None:
    assert vm.call_json("sys.implementation.name", "import sys") == "micropython"


@pytest.mark.parametrize("vector", FRAMES, ids=[v["name"] for v in FRAMES])
def test_frame_vectors_decode_and_encode(vm: MicroPythonVM, vector: dict[str, object]) -> None:
    hexframe = str(vector["hex"])
    decoded = vm.call_json(
        f"P.decode_message(binascii.unhexlify({hexframe[:-2]!r}))", "import nodeproto as P, binascii")
    assert decoded == vector["message"]
    encoded = vm.call_json(
        f"binascii.hexlify(P.encode_message(json.loads({json.dumps(vector['message'])!r}))).decode()",
        "import nodeproto as P, binascii, json")
    assert encoded == hexframe


@pytest.mark.parametrize("vector", INVALID, ids=[v["name"] for v in INVALID])
def test_invalid_vectors_rejected_with_reason(vm: MicroPythonVM, vector: dict[str, object]) -> None:
    hexframe = str(vector["hex"])
    setup = (
        "import nodeproto as P, binascii\n"
        "def _try(h):\n"
        "    blocks = P.FrameReader().feed(binascii.unhexlify(h))\n"
        "    try:\n"
        "        return {'message': P.decode_message(blocks[0])}\n"
        "    except P.ProtocolError as e:\n"
        "        return {'error': e.reason}\n"
    )
    got = vm.call_json(f"_try({hexframe!r})", setup)
    if "error" in vector:
        assert got == {"error": vector["error"]}
    else:
        assert got == {"message": vector["message"]}


@pytest.mark.parametrize("vector", ADVERTS, ids=[v["name"] for v in ADVERTS])
def test_advert_vectors(vm: MicroPythonVM, vector: dict[str, object]) -> None:
    enc = vector["encode"]
    assert isinstance(enc, dict)
    values = [tuple(v) for v in enc["values"]]
    got = vm.call_json(
        f"binascii.hexlify(P.encode_advert({enc['node']}, {enc['seq']}, {values!r})).decode()",
        "import nodeproto as P, binascii")
    assert got == vector["hex"]
    decoded = vm.call_json(f"P.decode_advert(binascii.unhexlify({vector['hex']!r}))",
                           "import nodeproto as P, binascii")
    assert decoded == vector["advert"]
