"""A full disk, on a real small filesystem (a tmpfs of a few MiB mounted by the test as root).

Issue 12 item 4: "database or disk is full" must be seen, counted and survived: the eviction
policy runs when free space falls under the reserve, a failed write keeps its group, and
commits resume by themselves when space comes back — also on a slow (2 obs/s) gateway.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.config import BufferSettings
from edge.model import Datastream, Observation, Provenance
from edge.outbox import Outbox, iter_unsent

GW = "gw-test"
PM25 = Datastream(GW, "sds", "pm2_5")
PROV = Provenance("SDS011", "58D9")

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "small"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a 4 MiB tmpfs (needs root): {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(directory: Path, leave_bytes: int) -> Path:
    """A filler file that leaves about ``leave_bytes`` free (0: until the disk is full)."""
    filler = directory / f"filler-{leave_bytes}"
    with open(filler, "wb", buffering=0) as fh:
        block = b"\0" * 16384
        with contextlib.suppress(OSError):
            while True:
                st = os.statvfs(directory)
                if st.f_bavail * st.f_frsize <= leave_bytes + len(block):
                    break
                fh.write(block)

        if leave_bytes == 0:
            with contextlib.suppress(OSError):
                while True:
                    fh.write(b"\0" * 512)

    return filler


class SlowGateway:
    """An outbox driven like the runtime drives it: 2 obs/s, committer every 50 ms, no uplink."""

    def __init__(self, box: Outbox) -> None:
        self.box = box
        self.appended = 0
        self._next_obs = time.monotonic()

    def run(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if time.monotonic() >= self._next_obs:
                self._next_obs += 0.5
                ms = time.time_ns() // 1_000_000
                self.box.append([Observation(PM25, float(self.appended), ms, PROV)])
                self.appended += 1
            if self.box.commit_due():
                self.box.commit()
            self.box.tick()
            time.sleep(0.05)


def test_slow_gateway_on_a_full_disk_evicts_counts_and_resumes(
    small_fs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = BufferSettings(
        commit_interval_s=0.5, spill_after_s=0.5, disk_reserve_bytes=1024 * 1024,
        commit_rows=20,
    )
    box = Outbox(small_fs / "outbox.db", settings, GW, uplinks=["mqtt"])
    gw = SlowGateway(box)
    caplog.set_level(logging.INFO, logger="duet.outbox")
    gw.run(3.0)  # broker down: everything is spilled to the database
    assert box.counters.spilled > 0 and box.counters.disk_full == 0

    # 1) free space under the reserve: "disk full" is logged, the oldest stored data evicted
    #    (counted, announced as a gap), and commits go on
    low = fill(small_fs, 512 * 1024)
    received = box.counters.received
    gw.run(3.0)
    assert box.counters.disk_full == 1
    message = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("disk full"))
    assert str(small_fs) in message and "bytes free" in message
    assert box.counters.evicted > 0
    assert any(g[3] == "disk-full" for g in box.pending_gaps("mqtt"))
    assert box.counters.received > received  # still committing into freed room

    # 2) no space at all: a write that needs a new page fails; the pending group is kept
    #    (not dropped), nothing escapes, and the 2 obs/s go on being accepted
    full = fill(small_fs, 0)
    spilled = box.counters.spilled
    gw.run(2.0)
    box.append([Observation(PM25, -1.0, time.time_ns() // 1_000_000, PROV)] * 2000)
    gw.appended += 2000
    assert box.commit() == 0
    gw.run(2.0)
    stuck = box.uncommitted
    assert stuck >= 2000 + 3
    assert box.counters.refused == 0
    assert box.counters.spilled == spilled  # the database could not take any either

    # 3) space comes back: commits resume by themselves, with what waited
    full.unlink()
    low.unlink()
    received = box.counters.received
    gw.run(3.0)
    assert box.uncommitted <= 2
    assert box.counters.received >= received + stuck
    assert any("disk space back" in r.getMessage() for r in caplog.records)
    # every observation appended is committed, or counted as evicted
    committed = box.counters.received + box.uncommitted
    assert committed == gw.appended
    box.close()


GATEWAY = """
[gateway]
id = "gw-full"
data_dir = "{data}"

[buffer]
spill_after_s = 1.0
disk_reserve_bytes = 1048576

[log]
format = "json"
level = "INFO"

[[sources]]
name = "sds"
type = "sds011"
port = "{port}"
options = {{ warmup_s = 0 }}
"""


def test_real_gateway_at_2_obs_per_s_resumes_after_the_disk_was_full(
    small_fs: Path, tmp_path: Path
) -> None:
    from hil.emulators import EMULATORS

    emu = EMULATORS["sds011"](link_path=tmp_path / "tty", interval_s=1.0, seed=1).start()
    cfg = tmp_path / "gw.toml"
    cfg.write_text(GATEWAY.format(data=small_fs, port=emu.port))
    log_path = tmp_path / "gw.log"
    with open(log_path, "w") as log_fh:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from edge.cli import main; main()", "run", str(cfg)],
            stdout=log_fh, stderr=subprocess.STDOUT,
        )
    try:
        def stored() -> int:
            try:
                return sum(1 for _ in iter_unsent(small_fs / "outbox.db"))
            except Exception:
                return -1

        deadline = time.monotonic() + 30
        while stored() < 6 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert stored() >= 6, log_path.read_text()[-2000:]
        full = fill(small_fs, 0)
        time.sleep(6)
        assert "disk full" in log_path.read_text()
        during = stored()
        full.unlink()
        time.sleep(6)
        after = stored()
        assert after >= during + 8, (during, after)  # 2 obs/s committed again, plus the backlog
        assert proc.poll() is None  # and the gateway never stopped
    finally:
        proc.terminate()
        proc.wait(20)
        emu.stop()
    text = log_path.read_text()
    assert "Traceback" not in text, text[-3000:]
