"""A node's batch mark has one owner, the outbox: committed with the batch's observations."""

from __future__ import annotations

import sqlite3
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
        recall=lambda k: _text(box.state("node1/" + k)),
    )


def _text(value: str | bytes | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def obs() -> Observation:
    return Observation(Datastream("gw", "node1.n1.pm", "pm2_5"), 5.0, 1_000, Provenance("SDS011"))


def test_mark_commits_with_its_observations_and_survives_a_crash(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.db", BufferSettings(), "gw")
    ctx = ctx_for(box)
    ctx.stage("node-hwm/n1", "41")
    ctx.emit([obs()])
    assert _Marks(ctx, tmp_path / "nodes.db").get("n1") is None  # not committed yet
    box.commit()
    # crash here (no close): the journal record holds both the batch and its mark
    reopened = Outbox(tmp_path / "outbox.db", BufferSettings(), "gw")
    marks = _Marks(ctx_for(reopened), tmp_path / "nodes.db")
    assert marks.get("n1") == 41  # the node's resend of batch 41 is recognised as a duplicate
    assert marks.get("other") is None
    assert reopened.next_batch("default", 10).sequences == [1]
    assert not (tmp_path / "nodes.db").exists()  # no second copy anywhere
    reopened.close()


def test_marks_file_of_earlier_versions_is_migrated_once(tmp_path: Path) -> None:
    legacy = tmp_path / "nodes.db"
    old = HwmStore(legacy)
    old.set("n1", 17)
    old.set("n2", 5)
    old.close()
    box = Outbox(tmp_path / "outbox.db", BufferSettings(), "gw")
    box.stage_state("node1/node-hwm/n2", "9")  # the outbox already knows a later n2 mark
    box.commit()
    marks = _Marks(ctx_for(box), legacy)
    assert marks.get("n1") == 17 and marks.get("n2") == 9  # before the migration commits
    assert legacy.exists()
    box.commit()  # the staged marks commit (no observations needed)
    assert marks.get("n1") == 17 and marks.get("n2") == 9
    assert not legacy.exists()
    migrated = tmp_path / "nodes.db.migrated"
    assert sqlite3.connect(migrated).execute("SELECT count(*) FROM node_hwm").fetchone()[0] == 2
    box.close()
    box = Outbox(tmp_path / "outbox.db", BufferSettings(), "gw")
    again = _Marks(ctx_for(box), legacy)  # the file is gone: only the outbox answers
    assert again.get("n1") == 17 and again.get("n2") == 9
    box.close()


def test_staged_state_alone_commits(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", BufferSettings(), "gw")
    box.stage_state("k", "v")
    assert box.state("k") is None
    assert box.commit_due() is False  # waits for the commit interval like observations do
    assert box.commit() == 0  # no observations, but the state is committed
    assert box.state("k") == "v"
    box.append([obs()])
    box.stage_state("k", "w")
    box.commit()
    assert box.state("k") == "w"
    box.close()
    assert Outbox(tmp_path / "o.db", BufferSettings(), "gw").state("k") == "w"
