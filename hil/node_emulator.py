"""HIL node emulator: the REAL firmware under MicroPython, its link UART on a pseudo-terminal.

The firmware (``firmware/*.py``) runs unmodified in the MicroPython WebAssembly port
(:mod:`hil.micropython_vm`) with the emulated SDS011/PMS5003, BME280 and OPS243 of
``hil/mp/`` behind its hardware layer. Its link UART is bridged to the master side of a
:class:`edge.emulation.pty_link.PtyLink`; the gateway opens the slave path like a USB-serial adapter.
Bytes the node writes while no gateway has the port open are lost, as on a real wire.

Node time runs faster than wall time: every tick advances the node by ``node_ms_per_tick``.

    python -m hil.node_emulator --kind air --interval 10       # prints the port to open
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path
from typing import Any

from edge.emulation.pty_link import PtyLink
from hil.micropython_vm import MicroPythonVM


class NodeEmulator:
    """``with NodeEmulator(...) as emu: gateway.open(emu.port)``; a thread drives the node."""

    def __init__(self, kind: str = "air", cfg: dict[str, Any] | None = None,
                 link_path: str | Path | None = None, node_ms_per_tick: int = 1000,
                 tick_s: float = 0.02, step_ms: int = 100, **harness: Any) -> None:
        self.kind = kind
        self.cfg = dict(cfg or {})
        self.harness = harness
        self.node_ms_per_tick = node_ms_per_tick
        self.tick_s = tick_s
        self.step_ms = step_ms
        self.link = PtyLink(link_path)
        self.vm: MicroPythonVM | None = None
        self.port = ""
        self.epoch_ms = 1_764_072_000_000
        self.node_ms = 0  # emulated time since setup; ``clock_ms()`` is the matching wall clock
        self.sent = bytearray()  # everything the node wrote (including bytes lost on the wire)
        self.received = bytearray()
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._paused = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> str:
        self.vm = MicroPythonVM()
        self.vm.exec("import os\nfor f in os.listdir():\n    os.remove(f)\nimport harness as h")
        args = ", ".join(f"{k}={v!r}" for k, v in self.harness.items())
        self.vm.exec(f"h.setup(kind={self.kind!r}, cfg={self.cfg!r}{', ' + args if args else ''})")
        self.port = self.link.open()
        self._thread = threading.Thread(target=self._loop, name="node-emulator", daemon=True)
        self._thread.start()
        return self.port

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                if not self._paused.is_set():
                    self.tick()
                time.sleep(self.tick_s)
        except BaseException as exc:  # surfaced by status()/stop() to the test
            self.error = exc

    def tick(self) -> None:
        """Advance the node by one tick: deliver gateway bytes, write what the node sent."""
        assert self.vm is not None
        rx = self.link.take() or b""
        self.received.extend(rx)
        with self._lock:
            tx = bytes.fromhex(self.vm.call_json(
                f"h.run({self.node_ms_per_tick}, {self.step_ms}, {rx.hex()!r})"))
        self.node_ms += self.node_ms_per_tick
        if tx:
            self.sent.extend(tx)
            self.link.write(tx)

    def clock_ms(self) -> int:
        """A wall clock running at the node's (accelerated) speed, for the gateway's time sync."""
        return self.epoch_ms + self.node_ms

    def pause(self) -> None:
        self._paused.set()

    def resume(self) -> None:
        self._paused.clear()

    def call(self, expr: str) -> Any:
        """Evaluate an expression in the node's interpreter (e.g. ``h.status()``)."""
        assert self.vm is not None
        with self._lock:
            return self.vm.call_json(expr)

    def status(self) -> dict[str, Any]:
        if self.error is not None:
            raise RuntimeError("node emulator thread failed") from self.error
        status: dict[str, Any] = self.call("h.status()")
        return status

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self.link.close()
        if self.vm is not None:
            self.vm.close()

    def __enter__(self) -> NodeEmulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=["air", "traffic"], default="air")
    parser.add_argument("--interval", type=int, default=10, help="node interval_s")
    parser.add_argument("--link", help="stable symlink to create for the port")
    parser.add_argument("--speed", type=float, default=10.0, help="node seconds per wall second")
    args = parser.parse_args()
    extra: dict[str, Any] = {"radar_every_ms": 1500} if args.kind == "traffic" else {}
    emu = NodeEmulator(args.kind, {"interval_s": args.interval, "pm_on_s": args.interval},
                       link_path=args.link, node_ms_per_tick=int(args.speed * 100), tick_s=0.1,
                       **extra)
    port = emu.start()
    print(f"node emulator ({args.kind}) on {args.link or port}", flush=True)
    try:
        while True:
            time.sleep(5)
            s = emu.status()
            print(f"next_seq={s['next_seq']} ring={s['ring']} connected={s['connected']}",
                  flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        emu.stop()


if __name__ == "__main__":
    main()
