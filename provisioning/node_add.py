"""`provision node add PORT`: onboard a firmware node over serial, then assign it.

The conversation uses the node protocol (``firmware/nodeproto.py``) through the gateway's
own :class:`edge.node.session.NodeSession`:

1. ``sync`` → the node answers with its ``hello`` (id, firmware, kind, sensors); the session
   replies with the time and the node's last acknowledged batch;
2. ``cfg`` with the settings to push (calibration artefact id, interval...) → the node
   validates them and answers with its whole config, or with an error ``log`` frame;
3. confirmed when every pushed key reads back with the pushed value.

Batches the node sends meanwhile are *not* acknowledged here: the node keeps them and the
gateway's ``node_serial`` source collects them later, so onboarding never loses data.
Assigning the node to this gateway means adding a ``node_serial`` source for it to the
gateway config (see :func:`source_snippet`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import serial

from edge.node.session import FeedResult, NodeInfo, NodeSession
from edge.node.store import HwmStore
from firmware import nodeproto as P

READ_CHUNK = 4096


class NodeAddError(RuntimeError):
    """Onboarding failed; the message says what the node did (or did not) answer."""


@dataclass
class NodeAdded:
    info: NodeInfo
    config: dict[str, Any]
    pushed: dict[str, Any]
    logs: list[dict[str, Any]] = field(default_factory=list)


class _Link:
    """A serial port plus a protocol session; ``until`` reads until a condition holds."""

    def __init__(self, port: serial.SerialBase, session: NodeSession):
        self.port = port
        self.session = session
        self.configs: list[dict[str, Any]] = []
        self.logs: list[dict[str, Any]] = []

    def send(self, frame: bytes) -> None:
        self.port.write(frame)
        self.port.flush()

    def until(self, done: Callable[[], bool], timeout_s: float, what: str,
              resend: bytes | None = None, resend_s: float = 1.0) -> None:
        deadline = time.monotonic() + timeout_s
        next_resend = time.monotonic() + resend_s
        while not done():
            now = time.monotonic()
            if now >= deadline:
                raise NodeAddError(f"no {what} from the node within {timeout_s:.0f} s — is it "
                                   "powered, on this port, at this baud rate, running duet "
                                   "firmware?")
            if resend is not None and now >= next_resend:
                self.send(resend)
                next_resend = now + resend_s
            data = self.port.read(READ_CHUNK)
            if data:
                self._handle(self.session.feed(data))

    def _handle(self, result: FeedResult) -> None:
        for reply in result.replies:  # time and the cumulative ack of the last *committed*
            self.send(reply)           # batch (none here): nothing new is acknowledged
        self.configs += result.configs
        self.logs += result.logs


def onboard(
    port: str,
    gateway_id: str,
    push: dict[str, Any],
    *,
    baudrate: int = 115200,
    timeout_s: float = 10.0,
    clock_ms: Callable[[], int] | None = None,
    open_port: Callable[..., serial.SerialBase] = serial.serial_for_url,
) -> NodeAdded:
    """Read the node's hello, push ``push`` (node config keys), confirm the read-back."""
    clock = clock_ms or (lambda: time.time_ns() // 1_000_000)
    session = NodeSession(gateway_id, "provision", HwmStore(":memory:"), clock)
    try:
        ser = open_port(port, baudrate=baudrate, timeout=0.05)
    except (serial.SerialException, OSError) as exc:
        raise NodeAddError(f"cannot open {port}: {exc}") from None
    try:
        link = _Link(ser, session)
        sync = P.encode_message({"type": "sync"})
        link.send(sync)
        link.until(lambda: session.node is not None, timeout_s, "hello", resend=sync)
        assert session.node is not None
        update = P.encode_message({"type": "cfg", "config": push})
        link.send(update)
        failed = _config_error_count(link)
        link.until(lambda: _confirmed(link.configs, push) or _config_error_count(link) > failed,
                   timeout_s, "config confirmation")
        if not _confirmed(link.configs, push):
            errors = [str(entry.get("text", "")) for entry in link.logs
                      if entry.get("code") == "config"]
            raise NodeAddError(f"the node refused the config: {'; '.join(errors)}")
        return NodeAdded(session.node, dict(link.configs[-1]), dict(push), list(link.logs))
    finally:
        ser.close()


def _config_error_count(link: _Link) -> int:
    return sum(1 for entry in link.logs if entry.get("code") == "config")


def _confirmed(configs: list[dict[str, Any]], push: dict[str, Any]) -> bool:
    return bool(configs) and all(configs[-1].get(k) == v for k, v in push.items())


def source_entry(name: str, port: str, baudrate: int = 115200,
                 state_path: str = "/var/lib/duet-edge/nodes.db") -> dict[str, str | int | dict[str, str]]:
    """The ``[[sources]]`` table that assigns the node on ``port`` to this gateway."""
    return {"name": name, "type": "node_serial", "port": port, "baudrate": baudrate,
            "options": {"state_path": state_path}}


def source_snippet(entry: dict[str, str | int | dict[str, str]]) -> str:
    """``entry`` as TOML text, for a technician to paste when it cannot be added."""
    from provisioning.config_edit import source_text

    return source_text(entry)
