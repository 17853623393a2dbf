"""Run one sensor emulator until Ctrl-C / SIGTERM.

    python -m hil.emulators sds011 --link /tmp/duet-sds011 [--rate 1.0]
        [--faults garbage@10,checksum@15,truncate@20,silence@30:5,unplug@60:3]

``--faults`` is a comma-separated schedule ``kind@every_s[:arg]``: every ``every_s`` seconds
inject ``kind`` (``garbage``, ``truncate``, ``checksum``, ``silence`` with ``arg`` seconds, or
``unplug`` with a replug after ``arg`` seconds, default 2).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from dataclasses import dataclass

from edge.emulation.base import SensorEmulator
from hil.emulators import EMULATORS

FAULT_KINDS = ("garbage", "truncate", "checksum", "silence", "unplug")


@dataclass
class ScheduledFault:
    kind: str
    every_s: float
    arg: float
    next_at: float = 0.0


def parse_faults(spec: str) -> list[ScheduledFault]:
    """Parse ``kind@every_s[:arg],...``; errors name the bad item and what is allowed."""
    out: list[ScheduledFault] = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        kind, _, rest = item.partition("@")
        every, _, arg = rest.partition(":")
        if kind not in FAULT_KINDS:
            raise ValueError(f"--faults item {item!r}: unknown kind {kind!r}; allowed: "
                             f"{', '.join(FAULT_KINDS)}")
        try:
            every_s = float(every)
            arg_v = float(arg) if arg else 2.0
        except ValueError:
            raise ValueError(f"--faults item {item!r}: expected kind@seconds[:arg], "
                             "e.g. unplug@60:3") from None
        if every_s <= 0 or arg_v < 0:
            raise ValueError(f"--faults item {item!r}: period must be > 0 and arg >= 0")
        out.append(ScheduledFault(kind, every_s, arg_v))
    return out


def apply_fault(emu: SensorEmulator, fault: ScheduledFault, stop: threading.Event) -> None:
    if fault.kind == "garbage":
        emu.inject_garbage()
    elif fault.kind == "truncate":
        emu.inject_truncated()
    elif fault.kind == "checksum":
        emu.inject_bad_checksum()
    elif fault.kind == "silence":
        emu.silence(fault.arg)
    elif fault.kind == "unplug":
        emu.unplug()
        print("unplugged", flush=True)
        if not stop.wait(fault.arg):
            print(f"replugged at {emu.replug()}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hil.emulators", description=__doc__)
    parser.add_argument("sensor", choices=sorted(EMULATORS))
    parser.add_argument("--link", help="stable symlink to the current pty (like /dev/serial/by-id)")
    parser.add_argument("--rate", type=float, default=None,
                        help="data frames per second in active mode (default: the sensor's)")
    parser.add_argument("--faults", default="", help="fault schedule, see above")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start-hour", type=float, default=8.0)
    parser.add_argument("--time-scale", type=float, default=1.0,
                        help="simulated seconds per real second for the diurnal series")
    parser.add_argument("--warmup-frames", type=int, default=0)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    try:
        faults = parse_faults(args.faults)
    except ValueError as exc:
        parser.error(str(exc))
    if args.rate is not None and args.rate <= 0:
        parser.error(f"--rate must be > 0 frames/s, got {args.rate}")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    emu = EMULATORS[args.sensor](
        args.link,
        interval_s=1.0 / args.rate if args.rate else None,
        seed=args.seed,
        start_hour=args.start_hour,
        time_scale=args.time_scale,
        warmup_frames=args.warmup_frames,
    )
    with emu:
        link = f" (link {args.link})" if args.link else ""
        print(f"{args.sensor} emulator on {emu.path}{link}", flush=True)
        now = time.monotonic()
        for f in faults:
            f.next_at = now + f.every_s
        while not stop.is_set():
            due = min((f.next_at for f in faults), default=time.monotonic() + 1.0)
            if stop.wait(max(0.0, due - time.monotonic())):
                break
            for f in faults:
                if time.monotonic() >= f.next_at:
                    apply_fault(emu, f, stop)
                    f.next_at = time.monotonic() + f.every_s
        print(f"stopped after {len(emu.sent_values)} data frames", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
