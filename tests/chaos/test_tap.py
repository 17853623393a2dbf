"""The journal tap reads what a real outbox commits, also from segments deleted meanwhile."""

from __future__ import annotations

from pathlib import Path

from edge.config import BufferSettings
from edge.model import Datastream, Observation, Provenance
from edge.outbox import Outbox
from hil.chaos.tap import JournalTap, Ledger

GW = "gw-tap"


def obs(i: int) -> Observation:
    return Observation(Datastream(GW, "sds0", "pm10" if i % 2 else "pm2_5"), i / 10,
                       1_700_000_000_000 + i, Provenance("SDS011"))


def test_tap_sees_every_commit_even_after_the_segment_is_deleted(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.db", BufferSettings(), GW, uplinks=("mqtt",))
    ledger = Ledger(tmp_path / "ledger.db")
    tap = JournalTap(tmp_path, GW, ledger)
    box.append([obs(i) for i in range(5)])
    box.commit()
    tap.read_all()  # opens the segment
    box.append([obs(i) for i in range(5, 12)])
    box.commit()
    (segment,) = tmp_path.glob("outbox.db.j0*")
    segment.unlink()  # retired before the tap read the second group
    with open(tmp_path / "outbox.db.j999999", "wb") as fh:
        fh.write(b"\x40\x00\x00\x00torn")  # a record torn by a crash: never committed
    tap.stop()
    assert ledger.committed_ranges(GW) == [(1, 12)]
    assert ledger.records == 2 and ledger.unreadable == 0
    rows = list(ledger.db.execute("SELECT seq, quantity, t, result FROM commits ORDER BY seq"))
    assert rows[0] == (1, "pm2_5", 1_700_000_000_000, 0.0)
    assert rows[-1] == (12, "pm10", 1_700_000_000_011, 1.1)
    box.close()
