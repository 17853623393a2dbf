"""Fixtures for the emulator tests: emulators on real pseudo-terminals, read with pyserial."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import serial

from edge.codec import Frame, StreamDecoder
from edge.emulation.base import SensorEmulator
from hil.emulators import EMULATORS


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[Callable[..., SensorEmulator]]:
    """Factory: ``emulator("sds011", interval_s=0.02)`` -> a started emulator (stopped after)."""
    started: list[SensorEmulator] = []

    def make(sensor: str, **kwargs: object) -> SensorEmulator:
        kwargs.setdefault("interval_s", 0.02)
        emu = EMULATORS[sensor](tmp_path / f"{sensor}-link", **kwargs)
        started.append(emu.start())
        return emu

    yield make
    for emu in started:
        emu.stop()


def open_port(emu: SensorEmulator, timeout: float = 0.05) -> serial.Serial:
    """Open the emulator's stable link exactly as the gateway opens a USB adapter."""
    serial_settings = emu.descriptor.serial
    assert serial_settings is not None
    port = serial.Serial(emu.port, serial_settings.baudrate, timeout=timeout)
    assert emu.wait_for_client(2.0)
    return port


def read_frames(
    port: serial.Serial,
    decoder: StreamDecoder,
    until: Callable[[list[Frame]], bool],
    timeout: float = 3.0,
) -> list[Frame]:
    """Read and decode until ``until(frames)`` holds or ``timeout`` passes."""
    frames: list[Frame] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not until(frames):
        frames += decoder.feed(port.read(256))
    return frames


def values(frames: list[Frame]) -> list[dict[str, float]]:
    return [{r.quantity: r.value for r in f.readings} for f in frames if f.kind == "data"]
