"""A broker that dies loses nothing: real Mosquitto killed with SIGKILL mid-stream, a real
`duet-edge run` reading an emulated sensor on a pty, a real `duet-edge ingest` with the shipped
receiver set-up. After recovery and the drain, every sequence number the gateway committed is
stored at the twin exactly once, with the value that was sent (issue 12, item 3)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.sensors.sds011.emulator import Sds011Emulator
from tests.plugins.mosquitto import Broker
from tests.spine.harness import (
    GatewayProcess,
    gateway_config,
    missing_sequences,
    outbox_depth,
    twin_sequences,
    wait_until,
)

pytestmark = pytest.mark.timeout(180)


class IngestProcess:
    """``duet-edge ingest`` as a real process (the twin receiver as shipped)."""

    def __init__(self, port: int, store: Path, log_path: Path, group: str) -> None:
        self.args = [sys.executable, "-c", "from edge.cli import main; main()", "ingest",
                     "--port", str(port), "--store", str(store), "--group", group]
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(self.args, stdout=logf, stderr=logf,
                                         env=dict(os.environ, PYTHONUNBUFFERED="1"))

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(15)
            self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def sds(tmp_path: Path) -> Iterator[Sds011Emulator]:
    with Sds011Emulator(link_path=tmp_path / "ttySDS", interval_s=0.02, seed=3) as emu:
        yield emu


@pytest.mark.parametrize(
    ("group", "persistence"),
    [("duet-ingest", True), ("", True), ("duet-ingest", False)],
    ids=["shared-group", "plain-subscription", "no-persistence"],
)
def test_broker_kill_9_mid_stream_loses_nothing(
    tmp_path: Path, sds: Sds011Emulator, group: str, persistence: bool
) -> None:
    workdir = tmp_path / "mosquitto"
    workdir.mkdir()
    broker = Broker(workdir, persistence=persistence)
    broker.start()
    store = tmp_path / "twin.db"
    ingest = IngestProcess(broker.port, store, tmp_path / "ingest.log", group)
    cfg = gateway_config(tmp_path, broker.port, [("sds", "sds011", sds.port)],
                         mqtt_extra="ack_timeout_s = 3\nmax_latency_s = 0.5")
    gw = GatewayProcess(cfg, tmp_path / "gw.log")
    try:
        ingest.start()
        gw.start()
        assert sds.wait_for_client(10), gw.log()
        wait_until(lambda: store.exists() and len(twin_sequences(store)[0]) > 100, 30,
                   "first deliveries")
        for _kill in range(2):
            sds.wait_sent(len(sds.sent_values) + 40, timeout=20)  # mid-stream
            broker.kill9()
            time.sleep(1.5)  # the gateway keeps committing while the broker is gone
            broker.start()
        sds.wait_sent(len(sds.sent_values) + 100, timeout=30)
        for _attempt in range(3):  # clean runs until the twin has confirmed everything
            gw.terminate()
            if outbox_depth(tmp_path) == 0:
                break
            gw.start()
            time.sleep(5)
        assert outbox_depth(tmp_path) == 0, "backlog not drained\n" + gw.log()[-3000:]
        seqs, gaps = twin_sequences(store)
        assert missing_sequences(seqs, gaps) == [], ingest.log()[-3000:]
        assert gaps == []  # nothing was evicted: every number is there
        assert len(seqs) > 300
        values = _stored_pairs(store)
        sent = [(s.values["pm2_5"], s.values["pm10"]) for s in sds.sent_values if s.values]
        it = iter(sent)
        assert all(any(pair == c for c in it) for pair in values), "a value was stored wrongly"
    finally:
        if gw.proc is not None:
            gw.kill9()
        ingest.stop()
        broker.stop()


def _stored_pairs(store: Path) -> list[tuple[float, float]]:
    import sqlite3

    db = sqlite3.connect(store)
    rows = list(db.execute("SELECT seq, quantity, result FROM observations ORDER BY seq"))
    db.close()
    pairs = []
    for first, second in zip(rows[::2], rows[1::2], strict=False):
        assert (first[1], second[1]) == ("pm2_5", "pm10") and second[0] == first[0] + 1
        pairs.append((first[2], second[2]))
    return pairs
