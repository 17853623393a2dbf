"""Full gateway: an emulated PMS5003 on a real pty develops a stuck fault; the flags reach
the twin receiver through the real runtime, outbox, Mosquitto and contract."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.model import QC_SUSPECT
from edge.sensors.pms5003.emulator import Pms5003Emulator
from tests.plugins.mosquitto import Broker
from tests.spine.harness import GatewayProcess, ReceiverThread, gateway_config, wait_until

pytestmark = pytest.mark.timeout(120)

STUCK_AFTER = 120  # pm2_5 rows at the twin before the sensor freezes
STUCK_ROWS = 80  # frozen values the twin must hold (flat_line suspect from the 30th)


class StuckPms5003(Pms5003Emulator):
    """A PMS5003 whose readings freeze (every field repeats the last frame) once ``stuck``."""

    stuck = False
    _frozen: dict[str, float] | None = None

    def sample(self, hour: float) -> dict[str, float]:
        if self.stuck:
            if self._frozen is None:
                self._frozen = super().sample(hour)
            return dict(self._frozen)
        return super().sample(hour)


@pytest.fixture
def pms(tmp_path: Path) -> Iterator[StuckPms5003]:
    with StuckPms5003(link_path=tmp_path / "ttyPMS", interval_s=0.02, seed=4) as emu:
        yield emu


def twin_rows(db: Path, quantity: str) -> list[tuple[float, dict[str, object]]]:
    con = sqlite3.connect(db)
    try:
        rows = con.execute(
            "SELECT result, quality_flag, quality_tests FROM observations "
            "WHERE sensor='pms' AND quantity=? ORDER BY seq", (quantity,)
        ).fetchall()
    except sqlite3.OperationalError:  # the receiver has not created its tables yet
        return []
    finally:
        con.close()
    return [(r, {} if flag is None else {"agg": flag, "tests": json.loads(t) if t else {}})
            for r, flag, t in rows]


def frozen_run(rows: list[tuple[float, dict[str, object]]]) -> int:
    """Length of the run of identical values at the end of ``rows``."""
    run = 0
    while run < len(rows) and rows[-1 - run][0] == rows[-1][0]:
        run += 1
    return run


def test_stuck_sensor_is_flagged_at_the_twin(
    tmp_path: Path, mosquitto: Broker, pms: StuckPms5003
) -> None:
    cfg = gateway_config(tmp_path, mosquitto.port, [("pms", "pms5003", pms.port)],
                         extra="\n[quality]\n")
    gw = GatewayProcess(cfg, tmp_path / "gw.log")
    db = tmp_path / "twin.db"
    with ReceiverThread(mosquitto.port, db):
        gw.start()
        assert pms.wait_for_client(30), gw.log()
        wait_until(lambda: len(twin_rows(db, "pm2_5")) >= STUCK_AFTER, 45, "clean rows")
        pms.stuck = True
        # the twin lags the sensor (commit + upload): wait for the frozen run itself
        wait_until(lambda: frozen_run(twin_rows(db, "pm2_5")) >= STUCK_ROWS, 60, "stuck rows")
        gw.terminate()
    rows = twin_rows(db, "pm2_5")
    assert all(q.get("tests") for _, q in rows), "every observation carries quality flags"
    run = frozen_run(rows)
    assert run >= STUCK_ROWS, [r for r, _ in rows[-STUCK_ROWS - 10:]]
    tail = rows[len(rows) - run:]
    # from the 30th identical value on (pm2_5 default flat_line_suspect), flagged at the twin
    flagged = [q for _, q in tail[30:]]
    assert flagged and all(q["tests"]["flat_line"] >= QC_SUSPECT for q in flagged), [  # type: ignore[index]
        q for q in flagged if q["tests"]["flat_line"] < QC_SUSPECT  # type: ignore[index]
    ][:3]
    assert all(q["agg"] >= QC_SUSPECT for q in flagged)  # type: ignore[operator]
    # before the fault: (almost) nothing flagged
    before = rows[: len(rows) - run]
    false_flags = [q for _, q in before if q["agg"] >= QC_SUSPECT]  # type: ignore[operator]
    assert len(false_flags) <= max(1, len(before) // 50), false_flags[:5]
    assert "anomaly models loaded" in gw.log() or "anomaly detection off" in gw.log()
