"""What a gateway tells the twin about itself over MQTT, besides observations.

- ``<prefix>/<gw>/status`` (retained): a small JSON document, published at every connect
  ("birth"), refreshed every ``heartbeat_s``, ``{"state": "offline", ...}`` at a clean
  disconnect; the connection's will is the retained ``{"state": "offline"}``.
- ``<prefix>/<gw>/events/<event>``: notable outbox events (corrupt database moved aside,
  eviction, dead letters, disk full, ...) as JSON, queued while offline (bounded).

Events are taken from the outbox's structured log records (logger ``duet.outbox``, level
WARNING and above, with an ``event`` field), so the outbox needs no knowledge of MQTT.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Mapping

import edge
from edge.logs import redact

MAX_QUEUED_EVENTS = 200
EVENT_LOGGERS = ("duet.outbox",)
_STANDARD = set(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))) | {
    "message", "asctime", "taskName"}
OFFLINE_WILL = b'{"state":"offline"}'


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def status_document(
    state: str,
    gateway: Mapping[str, object] | None,
    uplink: Mapping[str, object],
) -> bytes:
    """The status JSON: state, software, start time, backlog, per-sensor and uplink health."""
    doc: dict[str, object] = {"state": state, "software": edge.version(), "at_ms": _now_ms()}
    if gateway is not None:
        for key, name in (("started_ms", "started_ms"), ("buffer_depth", "backlog"),
                          ("oldest_unsent_ms", "oldest_unsent_ms"), ("evicted", "evicted"),
                          ("dead_lettered", "dead_lettered")):
            if key in gateway:
                doc[name] = gateway[key]
        sources = gateway.get("sources")
        if isinstance(sources, list):
            doc["sensors"] = {
                str(s.get("name")): _sensor(s) for s in sources if isinstance(s, Mapping)
            }
    doc["uplink"] = dict(uplink)
    return json.dumps(doc, separators=(",", ":"), default=str).encode()


def _sensor(source: Mapping[str, object]) -> dict[str, object]:
    out: dict[str, object] = {"state": source.get("state")}
    for key in ("last_frame_ms", "last_error"):
        if source.get(key):
            out[key] = source[key]
    return out


class EventTap(logging.Handler):
    """Keeps the outbox's notable log records until the uplink can publish them."""

    def __init__(self, loggers: tuple[str, ...] = EVENT_LOGGERS) -> None:
        super().__init__(logging.WARNING)
        self.queue: deque[tuple[str, bytes]] = deque(maxlen=MAX_QUEUED_EVENTS)
        self._loggers = loggers
        for name in loggers:
            logging.getLogger(name).addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        fields = vars(record)
        event = fields.get("event")
        if not isinstance(event, str) or not event:
            return
        body: dict[str, object] = {"event": event, "at_ms": int(record.created * 1000),
                                   "level": record.levelname.lower(),
                                   "msg": redact(record.getMessage())}
        for key, value in fields.items():
            if key not in _STANDARD and not key.startswith("_") and key != "event":
                body[key] = redact(value) if isinstance(value, str) else value
        self.queue.append((event, json.dumps(body, default=str).encode()))

    def detach(self) -> None:
        for name in self._loggers:
            logging.getLogger(name).removeHandler(self)
