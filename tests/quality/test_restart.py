"""The learned state survives restarts: exactly after a clean stop, to the last checkpoint
after kill -9. Through the real runtime (Gateway) and the real outbox (SQLite)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.config import GatewayConfig
from edge.model import Datastream, Observation, Provenance
from edge.outbox import Outbox, iter_unsent
from edge.quality.settings import QualitySettings
from edge.quality.stage import QualityStage
from edge.runtime import OutboxStateStore

from .runtime_helpers import gateway_config
from .runtime_helpers import run_gateway as run_batches

pytestmark = pytest.mark.timeout(120)

T0 = 1_700_000_000_000
MINUTE = 60_000
GATEWAY = "gw-restart"
PROV = Provenance(sensor_model="test")
Row = list[tuple[str, float]]


def rows(n: int = 3000) -> list[Row]:
    """Two streams a minute apart for two days: daily cycles, a spike, a lasting step."""
    rng = np.random.default_rng(7)
    i = np.arange(n)
    pm = 12 + 4 * np.sin(2 * np.pi * i / 1440) + rng.normal(0, 1.0, n)
    pm[900] += 60
    pm[2200:] += 25
    temp = 15 + 3 * np.sin(2 * np.pi * (i - 300) / 1440) + rng.normal(0, 0.05, n)
    return [[("pm2_5", round(float(a), 1)), ("temperature", round(float(b), 2))]
            for a, b in zip(pm, temp, strict=True)]


def batches(data: list[Row], start: int, stop: int) -> list[list[Observation]]:
    return [[Observation(Datastream(GATEWAY, "s1", code), v, T0 + i * MINUTE, PROV)
             for code, v in data[i]] for i in range(start, stop)]


def config(data_dir: Path) -> GatewayConfig:
    return gateway_config(GATEWAY, data_dir, "ml = { enabled = false }")


async def run_gateway(data_dir: Path, data: list[Row], start: int, stop: int) -> None:
    await run_batches(config(data_dir), batches(data, start, stop))


def uploaded(data_dir: Path) -> list[tuple[str, int, dict[str, object]]]:
    """What the outbox holds for the uplinks: (quantity, time, quality) in sequence order."""
    path = config(data_dir).outbox_path
    return [(o.stream.quantity_code, o.phenomenon_ms, o.quality.as_dict() if o.quality else {})
            for o in sorted(iter_unsent(path, GATEWAY), key=lambda o: o.sequence or 0)]


async def test_clean_restart_continues_exactly(tmp_path: Path) -> None:
    data = rows()
    await run_gateway(tmp_path / "straight", data, 0, len(data))
    await run_gateway(tmp_path / "restarted", data, 0, 1700)
    await run_gateway(tmp_path / "restarted", data, 1700, len(data))
    straight = uploaded(tmp_path / "straight")
    restarted = uploaded(tmp_path / "restarted")
    assert len(straight) == len(restarted) == 2 * len(data)
    assert restarted == straight  # scores, every test flag, the aggregate
    scores = [q["scores"]["anomaly"] for code, _, q in straight if code == "pm2_5"]  # type: ignore[index]
    assert max(scores[1700:]) >= 0.5  # the part after the restart does see anomalies
    # and without the checkpoint the same second half scores differently (it relearns)
    await run_gateway(tmp_path / "fresh", data, 1700, len(data))
    fresh = uploaded(tmp_path / "fresh")
    assert fresh != straight[2 * 1700:]


KILL_SCRIPT = """
import sys, time
from pathlib import Path
from tests.quality.test_restart import feed
feed(Path(sys.argv[1]), int(sys.argv[2]))
print("ready", flush=True)
time.sleep(60)
"""

COMMIT_EVERY = 50
CHECKPOINT_S = 600.0


def outbox_state(outbox: Outbox) -> OutboxStateStore:
    """The StateStore the runtime gives the quality stage, on a real outbox."""
    return OutboxStateStore(outbox, "stage:quality/")


def _stage(clock: list[float]) -> QualityStage:
    settings = QualitySettings.model_validate(
        {"ml": {"enabled": False}, "anomaly": {"checkpoint_interval_s": CHECKPOINT_S}})
    return QualityStage(settings, clock=lambda: clock[0])


def _outbox(path: Path) -> Outbox:
    from edge.config import BufferSettings

    return Outbox(path, BufferSettings.model_validate({"commit_rows": 100_000}), GATEWAY,
                  uplinks=["none"])


def feed(path: Path, upto: int) -> None:
    """Rows [0, upto) through stage + outbox: one row a second, a commit every 50 rows."""
    data = rows()
    clock = [0.0]
    outbox = _outbox(path)
    stage = _stage(clock)
    stage.open(outbox_state(outbox))
    for i in range(upto):
        clock[0] = float(i)
        outbox.append(stage.process(
            [Observation(Datastream(GATEWAY, "s1", c), v, T0 + i * MINUTE, PROV)
             for c, v in data[i]]))
        if (i + 1) % COMMIT_EVERY == 0:
            outbox.commit()
    # no close: the process is killed with uncommitted rows and a newer state in memory


def test_kill_9_falls_back_to_the_last_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    upto = 1234  # last commit after row 1199; checkpoints staged at rows 600 and 1200
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(path), str(upto)],
                            stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2],
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(10)
    committed = list(iter_unsent(path, GATEWAY))
    assert len(committed) == 2 * 1200  # the 34 uncommitted rows are all that was lost
    # the state checkpointed at row 600 went out with the commit after row 649; the one
    # staged at row 1200 waited for a commit that never came
    clock = [0.0]
    restored = _stage(clock)
    restored.open(outbox_state(_outbox(path)))
    reference = _stage(clock)
    data = rows()
    for i in range(601):
        clock[0] = float(i)
        reference.process([Observation(Datastream(GATEWAY, "s1", c), v, T0 + i * MINUTE, PROV)
                           for c, v in data[i]])
    assert restored._restored == {
        ds.key: (s.rules.to_bytes(), s.detector.to_bytes() if s.detector else b"")
        for ds, s in reference._streams.items()
    }
