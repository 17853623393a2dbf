"""Heap used by the firmware under real MicroPython (numbers quoted in docs/firmware.md).

The WebAssembly port only frees everything when ``gc.collect()`` runs at the top level (it
cannot scan the wasm stack of a running call), so each measurement point is its own request.
"""

from __future__ import annotations

import json

import pytest

from hil.micropython_vm import MicroPythonVM, available


def _alloc(vm: MicroPythonVM) -> int:
    vm.exec("gc.collect()")
    return int(vm.call_json("gc.mem_alloc()"))


def test_heap_used_by_firmware() -> None:
    reason = available()
    if reason:
        pytest.fail(reason)
    with MicroPythonVM() as vm:
        vm.exec("import gc, json")
        m0 = _alloc(vm)
        vm.exec("import hw, nodeproto, nodecfg, nodelink, nodeapp, pmsensor, bme280, traffic")
        m1 = _alloc(vm)
        vm.exec("import harness as h")
        m2 = _alloc(vm)
        vm.exec("h.setup(kind='air', cfg={'interval_s': 60, 'pm_on_s': 60})\nh.run(1000)")
        m3 = _alloc(vm)
        vm.exec("h.run(185000)")  # three intervals, no gateway: 3 batches wait in the ring
        m4 = _alloc(vm)
        # Allocation per sampling step of the firmware alone (emulators not ticking, one SDS011
        # frame per step waiting in the UART), with the collector off so nothing is hidden.
        per_step = vm.call_json(
            "(lambda n, u, f: (gc.disable(), [(u.rx.extend(f), n.step()) for _ in range(5)],"
            " gc.mem_alloc(), [(u.rx.extend(f), n.step()) for _ in range(100)],"
            " gc.mem_alloc(), gc.enable()))(h.state['node'], h.state['pmemu'].uart,"
            " h.emusensors.sds011_frame(12.5, 20.0))")
        vm.exec("def _per(f, k=100):\n"
                "    gc.disable(); a = gc.mem_alloc()\n"
                "    for _ in range(k): f()\n"
                "    b = gc.mem_alloc(); gc.enable(); return (b - a) / k\n"
                "n = h.state['node']; u = h.state['pmemu'].uart; u.rx = bytearray()\n"
                "fr = h.emusensors.sds011_frame(12.5, 20.0); buf = bytearray(64)")
        empty_step = vm.call_json("_per(n.step)")
        frame_step = vm.call_json("_per(lambda: (u.rx.extend(fr), n.step()))")
        fake_uart = vm.call_json("_per(lambda: (u.rx.extend(fr), u.readinto(buf)))")
        vm.exec("h.setup(kind='traffic', cfg={'interval_s': 60})\nh.run(1000)")
        m5 = _alloc(vm)
    heap = {
        "alloc_idle_step_bytes": empty_step,
        "alloc_pm_frame_step_bytes_firmware_only": frame_step - fake_uart,
        "modules_bytes": m1 - m0,
        "emulators_bytes": m2 - m1,
        "node_bytes": m3 - m2,
        "ring_3_batches_bytes": m4 - m3,
        "traffic_node_bytes": m5 - m2,
        "alloc_per_step_incl_fake_uart_bytes": (per_step[4] - per_step[2]) / 100,
    }
    print(f"\n[firmware heap under MicroPython] {json.dumps(heap)}")
    # An ESP32 without PSRAM gives MicroPython ~110 KB of heap: stay well below.
    assert heap["modules_bytes"] + heap["node_bytes"] < 80 * 1024
    assert heap["ring_3_batches_bytes"] < 4 * 1024
    assert heap["traffic_node_bytes"] < 16 * 1024
    assert heap["alloc_idle_step_bytes"] == 0  # the idle sampling loop allocates nothing
    assert heap["alloc_pm_frame_step_bytes_firmware_only"] == 0  # integers only per PM frame
