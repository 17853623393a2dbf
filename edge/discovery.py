"""What `duet-edge scan` finds: serial ports with a safe, read-only probe, and BLE sensors.

The probe never changes a sensor's settings: it listens first (SDS011, PMS5003 talk
unprompted), then sends only each descriptor's read-only ``probe`` bytes (read CO2, read
firmware version, read module info) at that sensor's serial settings.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import serial
from serial.tools import list_ports

from edge import plugins
from edge.codec import SensorDescriptor

LISTEN_S = 2.5
PROBE_WAIT_S = 0.8


@dataclass(slots=True)
class PortInfo:
    device: str
    vid_pid: str = ""
    serial_number: str = ""
    description: str = ""
    sensor: str | None = None
    preview: dict[str, float] = field(default_factory=dict)
    info: dict[str, object] = field(default_factory=dict)
    error: str = ""


def list_serial_ports(extra: list[str] | None = None) -> list[PortInfo]:
    """USB/UART ports the OS knows, plus explicitly named ones (pseudo-terminals, links)."""
    ports = [
        PortInfo(
            device=str(p.device),
            vid_pid=f"{p.vid:04X}:{p.pid:04X}" if p.vid is not None and p.pid is not None else "",
            serial_number=p.serial_number or "",
            description=p.description or "",
        )
        for p in list_ports.comports()
    ]
    known = {p.device for p in ports}
    ports += [PortInfo(device=d) for d in extra or [] if d not in known]
    return ports


def _serial_descriptors() -> list[SensorDescriptor]:
    found = (s.descriptor for s in plugins.sensors().values())
    return [d for d in found if d.interface == "serial" and d.serial is not None]


def _try(
    port: serial.Serial, desc: SensorDescriptor, send: bytes, wait_s: float
) -> PortInfo | None:
    assert desc.serial is not None
    port.baudrate = desc.serial.baudrate
    port.reset_input_buffer()
    if send:
        port.write(send)
        port.flush()
    decoder = desc.decoder()
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        data = port.read(256)
        if not data:
            continue
        for frame in decoder.feed(data):
            if (frame.kind == "data" and frame.readings) or frame.kind != "data":
                out = PortInfo(device=port.port or "", sensor=desc.name)
                out.preview = {r.quantity: r.value for r in frame.readings}
                out.info = dict(frame.info)
                return out
    return None


def probe_port(
    info: PortInfo, listen_s: float = LISTEN_S, probe_wait_s: float = PROBE_WAIT_S
) -> PortInfo:
    """Identify the sensor on one port, read-only. Fills ``sensor``/``preview`` or ``error``."""
    descs = _serial_descriptors()
    try:
        port = serial.Serial(info.device, timeout=0.1)
    except (serial.SerialException, OSError) as exc:
        info.error = str(exc)
        return info
    try:
        listeners = [d for d in descs if not d.probe]
        # sensors that talk unprompted: listen at each of their baud rates (9600 covers both)
        for baud in sorted({d.serial.baudrate for d in listeners if d.serial}):
            port.baudrate = baud
            port.reset_input_buffer()
            found = _listen(
                port, [d for d in listeners if d.serial and d.serial.baudrate == baud], listen_s
            )
            if found is not None:
                return _merge(info, found)
        for desc in (d for d in descs if d.probe):
            found = _try(port, desc, desc.probe, probe_wait_s)
            if found is not None:
                return _merge(info, found)
        info.error = "no supported sensor answered"
        return info
    finally:
        port.close()


def _listen(port: serial.Serial, descs: list[SensorDescriptor], seconds: float) -> PortInfo | None:
    decoders = {d.name: d.decoder() for d in descs}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        data = port.read(256)
        if not data:
            continue
        for name, decoder in decoders.items():
            for frame in decoder.feed(data):
                if frame.kind == "data":
                    out = PortInfo(device=port.port or "", sensor=name)
                    out.preview = {r.quantity: r.value for r in frame.readings}
                    out.info = dict(frame.info)
                    return out
    return None


def _merge(info: PortInfo, found: PortInfo) -> PortInfo:
    info.sensor, info.preview, info.info = found.sensor, found.preview, found.info
    return info


def config_snippet(ports: list[PortInfo], ble: list[tuple[str, str, str | None]]) -> str:
    """TOML ready to paste: one [[sources]] per recognised port, one BLE source naming devices."""
    lines: list[str] = []
    counts: dict[str, int] = {}
    for p in ports:
        if p.sensor is None:
            continue
        counts[p.sensor] = counts.get(p.sensor, 0) + 1
        lines += ["[[sources]]", f'name = "{p.sensor}-{counts[p.sensor]}"', f'type = "{p.sensor}"']
        lines.append(
            f'usb_serial = "{p.serial_number}"' if p.serial_number else f'port = "{p.device}"'
        )
        lines.append("")
    if ble:
        names = ", ".join(
            f'"{dev}" = "{sensor}-{dev.replace(":", "").lower()[-6:]}"' for dev, sensor, _ in ble
        )
        allow = ", ".join(f'"{dev}"' for dev, _, _ in ble)
        lines += [
            "[[sources]]",
            'name = "ble"',
            'type = "ble"',
            f"options = {{ allow = [{allow}], names = {{ {names} }} }}",
            "",
        ]
    return "\n".join(lines)
