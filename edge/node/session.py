"""One node's protocol session, without I/O: frames in, replies and observations out.

The serial source feeds received bytes to :meth:`NodeSession.feed` and gets back frames to
write (time sync, acks, sync requests) and accepted batches. A batch is acknowledged only
when the source calls :meth:`NodeSession.committed` after the outbox has committed its
observations; only then is the node's high-water mark persisted.

Acceptance rule (go-back-N, cumulative ack): the next accepted sequence is the persisted
mark + 1; a batch below it is a duplicate (acked again), a batch above it is out of order
(dropped; the node resends from the acked point) unless the node says its oldest batch is
above it (its ring overflowed: counted as a gap).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edge.model import Datastream, Observation, Provenance
from edge.node.store import MarkStore
from edge.quantities import QUANTITIES
from firmware import nodeproto as P

log = logging.getLogger("duet.node")

SYNC_INTERVAL_MS = 2000
TIME_RESYNC_MS = 3_600_000  # nodes have no RTC: re-send the time with an ack once an hour


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """What a node said in its hello."""

    node_id: str
    firmware: str
    kind: str
    sensors: tuple[tuple[str, str, tuple[str, ...]], ...]
    protocol: tuple[int, int]


@dataclass(slots=True)
class AcceptedBatch:
    """A batch accepted for the outbox; ack it after its observations are committed."""

    node_id: str
    seq: int
    observations: list[Observation]


@dataclass(slots=True)
class FeedResult:
    replies: list[bytes] = field(default_factory=list)
    batches: list[AcceptedBatch] = field(default_factory=list)
    logs: list[dict[str, Any]] = field(default_factory=list)
    configs: list[dict[str, Any]] = field(default_factory=list)


class NodeSession:
    """State of the link to one node over one serial port."""

    def __init__(self, gateway_id: str, source_name: str, hwm: MarkStore,
                 clock_ms: Callable[[], int], bad: Counter[str] | None = None) -> None:
        self.gateway_id = gateway_id
        self.source_name = source_name
        self.hwm = hwm
        self.clock_ms = clock_ms
        self.reader = P.FrameReader()
        self.node: NodeInfo | None = None
        self.bad: Counter[str] = bad if bad is not None else Counter()
        self.counts: Counter[str] = Counter()
        self.accepted_upto: int | None = None  # highest accepted (maybe uncommitted) sequence
        self._streams: dict[tuple[int, str], tuple[Datastream, Provenance]] = {}
        self._last_sync_ms: int | None = None
        self._last_time_ms: int | None = None

    # ------------------------------------------------------------------ input
    def feed(self, data: bytes) -> FeedResult:
        """Split, decode and act on received bytes. Never raises on bad input."""
        result = FeedResult()
        overflows = self.reader.overflows
        blocks = self.reader.feed(data)
        if self.reader.overflows != overflows:
            self.bad["oversize"] += self.reader.overflows - overflows
        for block in blocks:
            self.handle_block(block, result)
        return result

    def handle_block(self, block: bytes, result: FeedResult) -> None:
        try:
            msg = P.decode_message(block)
        except P.ProtocolError as exc:
            self.bad[exc.reason] += 1
            if exc.reason == "version" and self.bad["version"] == 1:
                log.warning("node frame of an unsupported protocol version ignored", extra={
                    "event": "node_bad_version", "source": self.source_name, "detail": exc.detail})
            return
        except Exception as exc:  # a codec bug must not stop the gateway
            self.bad["internal"] += 1
            log.exception("node frame decoder failed", extra={"error": str(exc)})
            return
        self.counts[msg["type"]] += 1
        kind = msg["type"]
        if kind == "hello":
            self._hello(msg, result)
        elif kind == "batch":
            self._batch(msg, result)
        elif kind == "log":
            result.logs.append(msg)
            log.info("node log", extra={
                "event": "node_log", "node": self.node_id, "level": msg["level"],
                "code": msg.get("code", ""), "text": msg["text"]})
        elif kind == "cfg":
            result.configs.append(msg["config"])
        else:
            self.bad["direction"] += 1  # a gateway->node type sent to us

    @property
    def node_id(self) -> str:
        return self.node.node_id if self.node else ""

    # ------------------------------------------------------------------ messages
    def _hello(self, msg: dict[str, Any], result: FeedResult) -> None:
        sensors = tuple((str(s[0]), str(s[1]), tuple(str(q) for q in s[2])) for s in msg["sensors"])
        proto = msg["protocol"]
        same_node = self.node is not None and self.node.node_id == msg["node_id"]
        self.node = NodeInfo(msg["node_id"], msg["firmware"], str(msg.get("kind", "")), sensors,
                             (int(proto[0]), int(proto[1])))
        self._streams.clear()
        mark = self.hwm.get(self.node.node_id)
        if not (same_node and self.accepted_upto is not None
                and (mark is None or self.accepted_upto > mark)):
            # (a re-hello while accepted batches still wait for their commit keeps them:
            # otherwise their resend would be accepted a second time)
            self.accepted_upto = mark
        result.replies.append(self._time_frame())
        result.replies.append(P.encode_message({"type": "ack", "seq": mark or 0}))

    def _batch(self, msg: dict[str, Any], result: FeedResult) -> None:
        if self.node is None:
            self.bad["no_hello"] += 1
            now = self.clock_ms()
            if self._last_sync_ms is None or now - self._last_sync_ms >= SYNC_INTERVAL_MS:
                self._last_sync_ms = now
                result.replies.append(P.encode_message({"type": "sync"}))
            return
        seq = int(msg["seq"])
        oldest = int(msg.get("oldest", seq))
        expected = self.accepted_upto + 1 if self.accepted_upto is not None else oldest
        if oldest > expected:
            self.counts["gap_batches"] += oldest - expected
            log.warning("node lost batches before sending them", extra={
                "event": "node_gap", "node": self.node_id, "from": expected, "to": oldest - 1})
            expected = oldest
        if seq < expected:
            self.counts["duplicates"] += 1
            mark = self.hwm.get(self.node_id) or 0
            result.replies.append(P.encode_message({"type": "ack", "seq": mark}))
            return
        if seq > expected:
            self.counts["out_of_order"] += 1
            return
        observations = self._observations(msg)
        self.accepted_upto = seq
        result.batches.append(AcceptedBatch(self.node_id, seq, observations))

    def _observations(self, msg: dict[str, Any]) -> list[Observation]:
        now = self.clock_ms()
        t0 = int(msg["t0_ms"]) if "t0_ms" in msg else now - int(msg["age_ms"])
        out: list[Observation] = []
        for idx, code, value, dt, dur in msg["records"]:
            stream = self._stream(idx, code)
            if stream is None:
                continue
            start = t0 + dt
            out.append(Observation(
                stream=stream[0], result=float(value), phenomenon_ms=start,
                phenomenon_end_ms=start + dur if dur else None, provenance=stream[1],
            ))
        return out

    def _stream(self, idx: int, code: str) -> tuple[Datastream, Provenance] | None:
        key = (idx, code)
        hit = self._streams.get(key)
        if hit is not None:
            return hit
        assert self.node is not None
        if idx >= len(self.node.sensors):
            self.bad["record_sensor"] += 1
            return None
        if code not in QUANTITIES:
            self.bad["record_quantity"] += 1
            return None
        name, model, _ = self.node.sensors[idx]
        stream = Datastream(self.gateway_id, f"{self.source_name}.{self.node.node_id}.{name}", code)
        prov = Provenance(sensor_model=model, firmware_version=self.node.firmware,
                          node_id=self.node.node_id)
        self._streams[key] = (stream, prov)
        return stream, prov

    # ------------------------------------------------------------------ after commit
    def committed(self, node_id: str, seq: int) -> bytes:
        """Persist the node's mark (its batches up to ``seq`` are committed) and build the ack
        (preceded by the time when the node's clock was last set more than an hour ago)."""
        firmware = self.node.firmware if self.node else ""
        self.hwm.set(node_id, seq, firmware)
        ack = P.encode_message({"type": "ack", "seq": seq})
        last = self._last_time_ms
        if last is not None and self.clock_ms() - last >= TIME_RESYNC_MS:
            return self._time_frame() + ack
        return ack

    def _time_frame(self) -> bytes:
        now = self.clock_ms()
        self._last_time_ms = now
        return P.encode_message({"type": "time", "epoch_ms": now})

    # ------------------------------------------------------------------ gateway requests
    @staticmethod
    def config_get() -> bytes:
        return P.encode_message({"type": "cfg_get"})

    @staticmethod
    def config_set(update: dict[str, Any]) -> bytes:
        return P.encode_message({"type": "cfg", "config": update})
