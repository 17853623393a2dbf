"""A source stopped while batches await their group commit writes the mark only after it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from edge.model import Datastream, Observation, Provenance
from edge.node.serial_source import NodeSerialSource
from edge.node.session import AcceptedBatch, NodeInfo, NodeSession
from edge.node.settings import NodeSerialOptions


def _stopped_source(tmp_path: Path, wait_s: float) -> tuple[NodeSerialSource, NodeSession,
                                                            Observation]:
    options = NodeSerialOptions.model_validate(
        {"state_path": str(tmp_path / "nodes.db"), "commit_wait_s": wait_s})
    source = NodeSerialSource("nodes", "/dev/null", "gw", options)
    session = NodeSession("gw", "nodes", source.hwm, lambda: 0)
    session.node = NodeInfo("n1", "1.0.0", "air", (("sds011", "SDS011", ("pm2_5",)),), (1, 0))
    obs = Observation(Datastream("gw", "nodes.n1.sds011", "pm2_5"), 1.0, 0, Provenance("SDS011"))
    source._unconfirmed = [AcceptedBatch("n1", 5, [obs])]
    source._settle_unconfirmed(session)
    return source, session, obs


async def test_mark_follows_the_shutdown_commit(tmp_path: Path) -> None:
    source, _, obs = _stopped_source(tmp_path, 10.0)
    await asyncio.sleep(0.05)
    assert source.hwm.get("n1") is None  # not committed yet: no mark
    obs.sequence = 17  # the runtime's shutdown commit
    await asyncio.sleep(0.1)
    assert source.hwm.get("n1") == 5


async def test_no_commit_no_mark(tmp_path: Path) -> None:
    source, _, _ = _stopped_source(tmp_path, 0.3)
    await asyncio.sleep(0.5)
    assert source.hwm.get("n1") is None  # the node will resend; accepted once then
