"""The node's flash files survive a reset at any point of a write (real MicroPython).

``hil/mp/powercut.py`` replaces the firmware's file primitives with a flash that loses power
after N bytes or operations; ``hil/mp/flashcases.py`` cuts one write at every step in turn and
"reboots" after each cut. Every reboot must find the state before the write or the state
after it — never a torn, empty or older one — and sequence and boot numbers never go back.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.node.session import NodeSession
from edge.node.store import HwmStore
from firmware import nodeproto as P
from hil.micropython_vm import MicroPythonVM
from tests.firmware.conftest import EmulatedNode

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "firmware"))
import flashstore  # the firmware module, importable by CPython too

SETUP = "import flashcases as fc\nfc._erase()"


def _campaign(vm: MicroPythonVM, call: str) -> dict[str, Any]:
    result: dict[str, Any] = vm.call_json(f"fc.{call}", SETUP)
    return result


def _stored_size(ring: list[list[Any]]) -> int:
    """Bytes of ring.bin for ``ring``: seal header and CRC, magic, entries."""
    return 7 + 4 + 3 + sum(15 + len(e[3]) // 2 for e in ring)


def _check_ring_campaign(result: dict[str, Any]) -> None:
    old, new, attempts = result["old"], result["new"], result["attempts"]
    assert old["ring"] != new["ring"], "the action must change the ring"
    cuts = [a for a in attempts if a[1]]
    assert len(cuts) == len(attempts) - 1 and not attempts[-1][1]
    # one attempt per byte written and per operation (open, flush, close, sync, renames)
    assert len(cuts) > _stored_size(new["ring"]) + 5
    outcomes = []
    for steps, _cut, found in cuts:
        assert found["ring"] in (old["ring"], new["ring"]), f"cut after {steps} steps: {found}"
        outcomes.append(found["ring"] == new["ring"])
        # A batch leaves the node only after the ring holding it is stored, so the numbers
        # that may be at the gateway are those of the old ring and of the ring found.
        may_be_sent = [e[0] for e in old["ring"] + found["ring"]] or [0]
        assert found["next_seq"] > max(may_be_sent), f"sequence reused after {steps} steps"
    # both outcomes happen: cuts before the commit keep the old ring, after it the new one
    assert not all(outcomes) and any(outcomes)
    assert outcomes == sorted(outcomes)  # once the new ring is committed it stays


@pytest.mark.parametrize(("action", "battery"), [("queue", False), ("queue", True),
                                                 ("ack", False), ("time", False)])
def test_ring_write_cut_at_every_step_keeps_the_old_or_the_new_ring(
    vm: MicroPythonVM, action: str, battery: bool
) -> None:
    result = _campaign(vm, f"ring_campaign({action!r}, battery={battery})")
    if action == "time":  # unsynced batches are not stored; the sync stores all three
        assert result["old"]["ring"] == [] and len(result["new"]["ring"]) == 3
    _check_ring_campaign(result)


def test_ring_write_cut_when_the_ring_is_full(vm: MicroPythonVM) -> None:
    result = _campaign(vm, "ring_campaign('queue', batches=4, ring_size=4)")
    assert [e[0] for e in result["new"]["ring"]][-1] not in [e[0] for e in result["old"]["ring"]]
    assert len(result["new"]["ring"]) == 4
    _check_ring_campaign(result)


@pytest.mark.parametrize("battery", [False, True])
def test_node_closing_an_interval_survives_a_cut_at_every_step(
    node: EmulatedNode, battery: bool
) -> None:
    result = node.eval(f"__import__('flashcases').node_campaign(battery={battery})")
    assert len(result["old"]["ring"]) == 2 and len(result["new"]["ring"]) == 3
    _check_ring_campaign(result)


def test_the_campaign_sees_the_loss_of_an_in_place_write(vm: MicroPythonVM) -> None:
    """Firmware 1.0.0 wrote ring.bin in place: the same cuts lose batches. The campaign
    would therefore fail if the firmware still did that."""
    result = _campaign(vm, "naive_ring_campaign()")
    old, new = result["old"], result["new"]
    assert (old, new) == ([1, 2, 3], [1, 2, 3, 4])
    lost = [a for a in result["attempts"] if a[2] not in (old, new)]
    assert lost and [] in [a[2] for a in lost]  # some cuts leave an empty ring


def test_config_save_cut_at_every_step_keeps_the_old_or_the_new_config(
    vm: MicroPythonVM,
) -> None:
    result = _campaign(vm, "config_campaign()")
    old, new = result["old"], result["new"]
    assert (old["interval_s"], new["interval_s"], new["calibration_id"]) == (120, 900, "cal-2026")
    found = [a[2] for a in result["attempts"][:-1]]
    assert len(found) > 30
    assert all(f in (old, new) for f in found)
    assert old in found and new in found


def test_boot_counter_cut_at_every_step_never_goes_back(vm: MicroPythonVM) -> None:
    result = _campaign(vm, "boot_campaign(5)")
    assert result["numbers"] == [1, 2, 3, 4, 5]
    attempts = result["attempts"]
    assert len(attempts) > 20
    for steps, cut, next_boot in attempts:
        # the interrupted boot (6) never returned its number, so the next one may reuse it
        assert next_boot in ((6, 7) if cut else (7,)), f"cut after {steps} steps: {next_boot}"
    assert {a[2] for a in attempts[:-1]} == {6, 7}


def test_a_corrupt_current_copy_falls_back_to_the_previous_one(vm: MicroPythonVM) -> None:
    for flip_at in (0, 5, 20, -1):  # magic, length, payload, CRC
        got = vm.call_json(
            "(_l.write_counter('c.bin', 41), _l.write_counter('c.bin', 42),"
            f" fc.corrupt_current('c.bin', {flip_at}), _l.read_counter('c.bin'))[3]",
            SETUP + "\nimport nodelink as _l")
        assert got == 41
    # a torn config.json (not JSON) → the previous copy
    got = vm.call_json(
        "(_c.save({'interval_s': 60}), _c.save({'interval_s': 90}),"
        " open('config.json', 'w').write('{\"interval_s\": 9'), _c.load()['interval_s'])[3]",
        SETUP + "\nimport nodecfg as _c")
    assert got == 60


def test_files_of_firmware_1_0_0_are_still_read(vm: MicroPythonVM) -> None:
    """After an upgrade the ring and the sequence counter written in place are kept."""
    got = vm.call_json(
        "(_w(), _l.read_counter('seq.bin'), [e[0] for e in _l.read_ring('ring.bin')])[1:]",
        SETUP + "\nimport nodelink as _l, struct\n"
        "def _w():\n"
        "    open('seq.bin', 'wb').write(struct.pack('>I', 33))\n"
        "    body = struct.pack(_l._ENTRY, 7, 1, 1764072000000, 2) + b'\\x81\\x01'\n"
        "    open('ring.bin', 'wb').write(_l.RING_MAGIC + body + body[:5])\n")
    assert got == [33, [7]]


def test_n_boots_say_1_to_n_in_their_hello(node: EmulatedNode) -> None:
    """The boot counter reaches the gateway in the hello's ``boot`` field (node protocol §2)."""
    node.setup(kind="air", cfg={"interval_s": 60, "pm_on_s": 60})
    boots = []
    for i in range(5):
        if i:
            node.eval("h.boot()")
        sent = node.run(100)  # the hello goes out at the first step
        session = NodeSession("gw", "nodes", HwmStore(":memory:"), lambda: 0)
        hellos = [P.decode_message(b) for b in P.FrameReader().feed(sent)]
        boots += [m["boot"] for m in hellos if m["type"] == "hello"]
        session.feed(sent)
        assert session.node is not None
    assert boots == [1, 2, 3, 4, 5]
    assert node.status()["boot"] == 5


@given(st.binary(max_size=300), st.data())
def test_sealed_files_refuse_every_truncation_and_byte_change(payload: bytes,
                                                              data: st.DataObject) -> None:
    sealed = flashstore.seal(payload)
    assert flashstore.unseal(sealed) == payload
    cut = data.draw(st.integers(0, len(sealed) - 1))
    assert flashstore.unseal(sealed[:cut]) is None
    pos = data.draw(st.integers(0, len(sealed) - 1))
    flip = data.draw(st.integers(1, 255))
    changed = bytearray(sealed)
    changed[pos] ^= flip
    assert flashstore.unseal(bytes(changed)) is None


def test_sealed_format_is_the_same_under_micropython(vm: MicroPythonVM) -> None:
    payload = bytes(range(256)) * 2
    got = vm.call_json(f"__import__('flashstore').seal({payload!r}).hex()")
    assert bytes.fromhex(got) == flashstore.seal(payload)
