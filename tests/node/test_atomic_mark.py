"""A node's batch mark is committed in the same transaction as the batch's observations."""

from __future__ import annotations

from pathlib import Path

from edge.config import BufferSettings
from edge.model import Datastream, Observation, Provenance
from edge.node.serial_source import _Marks
from edge.node.store import HwmStore
from edge.outbox import Outbox
from edge.seams import SourceContext, SourceHealth


def ctx_for(box: Outbox) -> SourceContext:
    return SourceContext(
        "gw",
        box.append,
        SourceHealth("node1"),
        stage=lambda k, v: box.stage_state("node1/" + k, v),
        recall=lambda k: box.state("node1/" + k),
    )


def test_mark_survives_a_crash_before_the_hwm_file_is_written(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.db", BufferSettings(), "gw")
    ctx = ctx_for(box)
    obs = [Observation(Datastream("gw", "node1.n1.pm", "pm2_5"), 5.0, 1_000, Provenance("SDS011"))]
    ctx.stage("node-hwm/n1", "41")
    ctx.emit(obs)
    box.commit()
    # crash here: the HwmStore was never told (kill -9 before its write)
    box._db.close()
    reopened = Outbox(tmp_path / "outbox.db", BufferSettings(), "gw")
    marks = _Marks(HwmStore(tmp_path / "nodes.db"), ctx_for(reopened))
    assert marks.get("n1") == 41  # the node's resend of batch 41 is recognised as a duplicate
    assert marks.get("other") is None
    reopened.close()


def test_staged_state_waits_for_observations_to_commit_with(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", BufferSettings(), "gw")
    box.stage_state("k", "v")
    assert box.commit() == 0  # nothing pending: nothing written
    box.append([Observation(Datastream("gw", "s", "pm2_5"), 1.0, 1, Provenance("X"))])
    box.stage_state("k", "w")
    box.commit()
    assert box.state("k") == "w"
    box.close()
