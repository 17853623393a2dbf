"""The emulator CLI runs until SIGTERM, keeps its link, and follows a fault schedule."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import serial

from edge.sensors.sds011 import codec as sds011
from hil.emulators.__main__ import parse_faults


def test_cli_runs_until_sigterm(tmp_path: Path) -> None:
    link = tmp_path / "duet-sds011"
    proc = subprocess.Popen(
        [sys.executable, "-m", "hil.emulators", "sds011", "--link", str(link), "--rate", "20",
         "--faults", "garbage@0.2"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("sds011 emulator on /dev/pts/")
        assert os.readlink(link) in first
        dec = sds011.Sds011Decoder()
        with serial.Serial(str(link), 9600, timeout=0.1) as port:
            deadline = time.monotonic() + 3
            frames: list = []
            while time.monotonic() < deadline and (len(frames) < 10 or not dec.stats.bad):
                frames += dec.feed(port.read(128))
        assert len(frames) >= 10 and dec.stats.bad["garbage"] >= 1
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "stopped after" in out
    assert not link.exists()


def test_cli_unplug_schedule_replugs_and_reports(tmp_path: Path) -> None:
    link = tmp_path / "duet-pms"
    proc = subprocess.Popen(
        [sys.executable, "-m", "hil.emulators", "pms5003", "--link", str(link), "--rate", "20",
         "--faults", "unplug@0.3:0.2"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("pms5003 emulator on /dev/pts/")
        assert proc.stdout.readline().strip() == "unplugged"
        replugged = proc.stdout.readline().strip()
        assert replugged.startswith("replugged at /dev/pts/")
        assert os.readlink(link) == replugged.removeprefix("replugged at ")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)
    assert proc.returncode == 0


def test_fault_spec_errors_name_the_item() -> None:
    assert [f.kind for f in parse_faults("garbage@1,unplug@5:2")] == ["garbage", "unplug"]
    with pytest.raises(ValueError, match=r"'smoke@1'.*allowed: garbage"):
        parse_faults("smoke@1")
    with pytest.raises(ValueError, match="'unplug@x'"):
        parse_faults("unplug@x")
