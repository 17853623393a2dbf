"""The twin receiver's MQTT 5 client: subscribe at QoS 1, acknowledge after the commit, answer.

Why not aiomqtt/paho here (the gateway keeps them): a receiver handles thousands of small
messages a second, and measured on one worker (docs/benchmarks.md, "Twin receivers") paho and
aiomqtt spent more CPU per 10-observation message than decoding and storing it — paho builds
MQTT 5 property tables for every PUBLISH and PUBACK, aiomqtt reads one packet per turn of the
event loop and waits for each QoS 1 answer with its own event and timeout task. This client does
only what the receiver needs, on an asyncio protocol, in bulk:

- every packet that has arrived is parsed at each wake-up; a PUBLISH costs one topic decode and
  one payload copy (properties are skipped by their length: the receiver uses none);
- PUBACKs of a whole group leave in one write, after the group is stored and answered;
- QoS 1 answers (acks to gateways) are written together, within the broker's Receive Maximum,
  without waiting: those beyond it leave as the broker's PUBACKs make room;
- the broker's own Receive Maximum is not relied on to bound memory (Mosquitto 2.0.11 keeps to
  ours only until acknowledgements flow): with ``receive_maximum`` messages waiting, the client
  stops reading the socket, so a burst waits in the broker, not here.

Not supported, because the receiver does not use them: QoS 2, wills, topic aliases, enhanced
authentication (AUTH). Any of them from the broker is a protocol error that ends the session;
the receiver reconnects and the broker delivers the unacknowledged messages again.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import struct
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType

log = logging.getLogger("duet.ingest.mqtt")

CONNECT_TIMEOUT_S = 10.0
DISCONNECT_WAIT_S = 2.0  # for the broker to read our last PUBACKs and close the connection
MAX_HELD = 100_000  # answers waiting for room at the broker (tens of bytes each)

_CONNACK, _PUBLISH, _PUBACK, _SUBACK, _PINGRESP, _DISCONNECT, _AUTH = 2, 3, 4, 9, 13, 14, 15
_PINGREQ = b"\xc0\x00"
_DISCONNECT_NORMAL = b"\xe0\x00"
_PUBACK_HEADER = struct.Struct("!BBH")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")

# MQTT 5 reason codes a receiver may meet (spec §2.4), for one-line errors
REASONS = {
    0x80: "unspecified error", 0x81: "malformed packet", 0x82: "protocol error",
    0x83: "implementation specific error", 0x84: "unsupported protocol version",
    0x85: "client identifier not valid", 0x86: "bad user name or password",
    0x87: "not authorized", 0x88: "server unavailable", 0x89: "server busy", 0x8A: "banned",
    0x8B: "server shutting down", 0x8C: "bad authentication method",
    0x8D: "keep alive timeout", 0x8E: "session taken over", 0x8F: "topic filter invalid",
    0x90: "topic name invalid", 0x93: "receive maximum exceeded", 0x95: "packet too large",
    0x97: "quota exceeded", 0x9C: "use another server", 0x9D: "server moved",
    0x9E: "shared subscriptions not supported", 0x9F: "connection rate exceeded",
    0xA2: "wildcard subscriptions not supported",
}

# property identifier -> how its value is laid out (spec §2.2.2.2)
_BYTE, _U16_KIND, _U32_KIND, _VARINT, _STRING, _BINARY, _PAIR = range(7)
_PROPERTY_KINDS = {
    0x01: _BYTE, 0x02: _U32_KIND, 0x03: _STRING, 0x08: _STRING, 0x09: _BINARY, 0x0B: _VARINT,
    0x11: _U32_KIND, 0x12: _STRING, 0x13: _U16_KIND, 0x15: _STRING, 0x16: _BINARY,
    0x17: _BYTE, 0x18: _U32_KIND, 0x19: _BYTE, 0x1A: _STRING, 0x1C: _STRING, 0x1F: _STRING,
    0x21: _U16_KIND, 0x22: _U16_KIND, 0x23: _U16_KIND, 0x24: _BYTE, 0x25: _BYTE, 0x26: _PAIR,
    0x27: _U32_KIND, 0x28: _BYTE, 0x29: _BYTE, 0x2A: _BYTE,
}
RECEIVE_MAXIMUM, REASON_STRING, SERVER_KEEP_ALIVE, SESSION_EXPIRY = 0x21, 0x1F, 0x13, 0x11


class MqttError(Exception):
    """The connection failed, was refused or ended; the receiver reconnects."""


class ProtocolError(MqttError):
    """The broker sent something this client does not accept (malformed or unsupported)."""


def _int_property(props: dict[int, object], ident: int, default: int) -> int:
    value = props.get(ident, default)
    return value if isinstance(value, int) else default


def reason_text(code: int) -> str:
    return f"{REASONS.get(code, 'reason')} (0x{code:02x})"


@dataclass(slots=True)
class Message:
    """One PUBLISH received: ``packet_id`` is 0 for QoS 0 (nothing to acknowledge)."""

    topic: str
    payload: bytes
    qos: int
    packet_id: int
    retain: bool = False
    dup: bool = False


@dataclass(frozen=True, slots=True)
class ClientSettings:
    host: str
    port: int
    client_id: str
    username: str | None = None
    password: str | None = None
    tls: ssl.SSLContext | None = None
    clean_start: bool = False
    session_expiry_s: int = 0
    receive_maximum: int = 1000  # also: stop reading the socket with this many waiting
    keepalive_s: int = 60


# ---------------------------------------------------------------------------- encoding
def encode_varint(value: int) -> bytes:
    """MQTT's variable byte integer (1-4 bytes, 7 bits each, low first)."""
    if not 0 <= value <= 268_435_455:
        raise ValueError(f"{value} does not fit an MQTT variable byte integer")
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | 0x80 if value else byte)
        if not value:
            return bytes(out)


def _string(text: str) -> bytes:
    raw = text.encode("utf-8")
    return _U16.pack(len(raw)) + raw


def _binary(raw: bytes) -> bytes:
    return _U16.pack(len(raw)) + raw


def _packet(first_byte: int, body: bytes) -> bytes:
    return bytes((first_byte,)) + encode_varint(len(body)) + body


def encode_connect(s: ClientSettings) -> bytes:
    flags = 0x02 if s.clean_start else 0
    if s.username is not None:
        flags |= 0x80
    if s.password is not None:
        flags |= 0x40
    props = (bytes((SESSION_EXPIRY,)) + _U32.pack(s.session_expiry_s)
             + bytes((RECEIVE_MAXIMUM,)) + _U16.pack(s.receive_maximum))
    body = (_string("MQTT") + bytes((5, flags)) + _U16.pack(s.keepalive_s)
            + encode_varint(len(props)) + props + _string(s.client_id))
    if s.username is not None:
        body += _string(s.username)
    if s.password is not None:
        body += _binary(s.password.encode("utf-8"))
    return _packet(0x10, body)


def encode_subscribe(packet_id: int, topic_filter: str, qos: int) -> bytes:
    return _packet(0x82, _U16.pack(packet_id) + b"\x00" + _string(topic_filter) + bytes((qos,)))


def encode_publish_qos1(packet_id: int, topic: str, payload: bytes) -> bytes:
    return _packet(0x32, _string(topic) + _U16.pack(packet_id) + b"\x00" + payload)


def encode_pubacks(packet_ids: Sequence[int]) -> bytes:
    """PUBACKs (success, no properties) for these packet identifiers, back to back."""
    pack = _PUBACK_HEADER.pack
    return b"".join([pack(0x40, 2, pid) for pid in packet_ids])


# ---------------------------------------------------------------------------- decoding
def read_varint(data: bytes | bytearray | memoryview, pos: int, end: int) -> tuple[int, int]:
    """(value, position after it); ProtocolError past ``end`` or beyond four bytes."""
    value = shift = 0
    for _ in range(4):
        if pos >= end:
            raise ProtocolError("malformed packet: variable byte integer runs past its packet")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    raise ProtocolError("malformed packet: variable byte integer longer than four bytes")


def read_properties(data: bytes | bytearray | memoryview, pos: int,
                    end: int) -> tuple[dict[int, object], int]:
    """The properties at ``pos`` (user properties are skipped), and the position after them."""
    length, pos = read_varint(data, pos, end)
    stop = pos + length
    if stop > end:
        raise ProtocolError("malformed packet: properties run past their packet")
    found: dict[int, object] = {}
    while pos < stop:
        ident = data[pos]
        kind = _PROPERTY_KINDS.get(ident)
        if kind is None:
            raise ProtocolError(f"malformed packet: unknown property 0x{ident:02x}")
        value, pos = _read_property(data, pos + 1, stop, kind)
        if ident != 0x26:
            found[ident] = value
    if pos != stop:
        raise ProtocolError("malformed packet: a property runs past the properties' length")
    return found, stop


def _read_property(data: bytes | bytearray | memoryview, pos: int, stop: int,
                   kind: int) -> tuple[object, int]:
    if kind == _VARINT:
        return read_varint(data, pos, stop)
    width = {_BYTE: 1, _U16_KIND: 2, _U32_KIND: 4}.get(kind)
    if width is not None:
        if pos + width > stop:
            raise ProtocolError("malformed packet: a property runs past the properties' length")
        return int.from_bytes(data[pos:pos + width], "big"), pos + width
    first, pos = _read_binary(data, pos, stop)
    if kind == _PAIR:
        _, pos = _read_binary(data, pos, stop)
    if kind in (_STRING, _PAIR):
        return first.decode("utf-8", "replace"), pos
    return first, pos


def _read_binary(data: bytes | bytearray | memoryview, pos: int, stop: int) -> tuple[bytes, int]:
    if pos + 2 > stop:
        raise ProtocolError("malformed packet: a length runs past its packet")
    size = (data[pos] << 8) | data[pos + 1]
    if pos + 2 + size > stop:
        raise ProtocolError("malformed packet: a string runs past its packet")
    return bytes(data[pos + 2:pos + 2 + size]), pos + 2 + size


class PacketReader:
    """Splits a byte stream into MQTT packets and turns PUBLISH packets into :class:`Message`.

    ``feed`` takes whatever the socket delivered (any split) and returns the messages and the
    other packets (type, flags, body) completed by it; what is left waits for the next call.
    """

    def __init__(self, max_packet: int = 16 * 1024 * 1024) -> None:
        self._buffer = bytearray()
        self.max_packet = max_packet

    def feed(self, data: bytes) -> tuple[list[Message], list[tuple[int, int, bytes]]]:
        buf = self._buffer
        buf += data
        messages: list[Message] = []
        others: list[tuple[int, int, bytes]] = []
        end = len(buf)
        pos = 0
        with memoryview(buf) as view:
            while end - pos >= 2:
                first = buf[pos]
                if buf[pos + 1] < 0x80:  # the common case: a packet of < 128 bytes left
                    length, start = buf[pos + 1], pos + 2
                else:
                    try:
                        length, start = read_varint(buf, pos + 1, min(end, pos + 5))
                    except ProtocolError:
                        if end - pos >= 5:
                            raise
                        break  # the length itself has not fully arrived
                if length > self.max_packet:
                    raise ProtocolError(f"packet of {length} bytes: more than "
                                        f"{self.max_packet} accepted")
                stop = start + length
                if stop > end:
                    break
                if first >> 4 == _PUBLISH:
                    messages.append(_publish(first, view, start, stop))
                else:
                    others.append((first >> 4, first & 0x0F, bytes(view[start:stop])))
                pos = stop
        del buf[:pos]
        return messages, others


def _publish(first: int, view: memoryview, pos: int, stop: int) -> Message:
    qos = (first >> 1) & 0x03
    if qos > 1:
        raise ProtocolError("QoS 2 PUBLISH: this client subscribes at QoS 1 at most")
    if pos + 2 > stop:
        raise ProtocolError("malformed PUBLISH: no topic")
    size = (view[pos] << 8) | view[pos + 1]
    topic_end = pos + 2 + size
    if size == 0 or topic_end > stop:
        raise ProtocolError("malformed PUBLISH: empty topic or topic past the packet "
                            "(topic aliases are not accepted)")
    try:
        topic = str(view[pos + 2:topic_end], "utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("malformed PUBLISH: topic is not UTF-8") from None
    pos = topic_end
    packet_id = 0
    if qos:
        if pos + 2 > stop:
            raise ProtocolError("malformed PUBLISH: no packet identifier")
        packet_id = (view[pos] << 8) | view[pos + 1]
        pos += 2
    if pos < stop and view[pos] < 0x80:  # properties length in one byte: the common case
        pos += 1 + view[pos]
    else:
        length, pos = read_varint(view, pos, stop)
        pos += length
    if pos > stop:
        raise ProtocolError("malformed PUBLISH: properties past the packet")
    return Message(topic, bytes(view[pos:stop]), qos, packet_id, bool(first & 0x01),
                   bool(first & 0x08))


# ---------------------------------------------------------------------------- the client
class _Protocol(asyncio.Protocol):
    """Bytes in and out; every decision is the client's."""

    def __init__(self, client: SubscriberClient) -> None:
        self.client = client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.client._transport = transport

    def data_received(self, data: bytes) -> None:
        self.client._data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client._lost(MqttError(f"connection lost: {exc}" if exc else "connection closed"))
        self.client._closed.set()


class SubscriberClient:
    """One MQTT 5 session of the receiver; ``async with`` connects, leaving disconnects."""

    def __init__(self, settings: ClientSettings) -> None:
        self.settings = settings
        self.session_present = False
        self.broker_receive_maximum = 65535
        self.refused_answers = 0  # QoS 1 publishes the broker answered with an error
        self._transport: asyncio.Transport | None = None
        self._reader = PacketReader()
        self._error: MqttError | None = None
        self._queue: deque[Message] = deque()
        self._paused = False
        self._message_waiter: asyncio.Future[None] | None = None
        self._connack: asyncio.Future[tuple[int, int, dict[int, object]]] | None = None
        self._subacks: dict[int, asyncio.Future[list[int]]] = {}
        self._in_flight: dict[int, str] = {}  # our QoS 1 publishes: packet id -> topic
        self._held: deque[tuple[str, bytes]] = deque()  # waiting for the broker's window
        self._next_id = 0
        self._last_received = time.monotonic()
        self._keepalive: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()

    # ------------------------------------------------------------------ session
    async def __aenter__(self) -> SubscriberClient:
        await self.connect()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.disconnect()

    async def connect(self) -> None:
        s = self.settings
        loop = asyncio.get_running_loop()
        self._connack = loop.create_future()
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                await loop.create_connection(lambda: _Protocol(self), s.host, s.port,
                                             ssl=s.tls, server_hostname=s.host if s.tls else None)
                self._write(encode_connect(s))
                flags, code, props = await self._connack
        except TimeoutError:
            self._abort()
            raise MqttError(f"no CONNACK from {s.host}:{s.port} within "
                            f"{CONNECT_TIMEOUT_S:.0f} s") from None
        except OSError as exc:
            self._abort()
            raise MqttError(f"cannot connect to {s.host}:{s.port}: {exc}") from None
        if code >= 0x80:
            self._abort()
            why = props.get(REASON_STRING)
            raise MqttError(f"the broker refused the connection: {reason_text(code)}"
                            + (f": {why}" if why else ""))
        self.session_present = bool(flags & 0x01)
        self.broker_receive_maximum = _int_property(props, RECEIVE_MAXIMUM, 65535)
        keepalive = _int_property(props, SERVER_KEEP_ALIVE, s.keepalive_s)
        if keepalive:
            self._keepalive = asyncio.create_task(self._keep_alive(keepalive))

    async def disconnect(self) -> None:
        """Leave cleanly (the session stays, for ``session_expiry_s``).

        Waits for the broker to close the connection after our DISCONNECT, so that it has read
        every PUBACK before it: a broker that sees the next connection first may take over the
        session with acknowledgements still unread (Mosquitto does) and send those again."""
        if self._keepalive is not None:
            self._keepalive.cancel()
        transport = self._transport
        if transport is not None and not transport.is_closing() and self._error is None:
            transport.write(_DISCONNECT_NORMAL)
            if transport.can_write_eof():
                transport.write_eof()
            try:
                async with asyncio.timeout(DISCONNECT_WAIT_S):
                    await self._closed.wait()
            except TimeoutError:
                pass
        if transport is not None:
            transport.close()
        self._lost(MqttError("disconnected"))

    def _abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    async def _keep_alive(self, keepalive_s: int) -> None:
        """A PINGREQ every half keep-alive; a broker silent for 1.5 of it is taken for dead."""
        while self._error is None:
            await asyncio.sleep(keepalive_s / 2)
            if self._error is not None or self._transport is None:
                return
            silent = time.monotonic() - self._last_received
            if not self._paused and silent > 1.5 * keepalive_s:
                self._transport.abort()
                self._lost(MqttError(f"no packet from the broker for {silent:.0f} s"))
                return
            self._transport.write(_PINGREQ)

    # ------------------------------------------------------------------ receiving
    async def subscribe(self, topic_filter: str, qos: int = 1) -> list[int]:
        """Subscribe; returns the broker's reason codes (≥ 0x80: refused)."""
        packet_id = self._allocate_id()
        waiter = asyncio.get_running_loop().create_future()
        self._subacks[packet_id] = waiter
        self._write(encode_subscribe(packet_id, topic_filter, qos))
        self._resume_reading()  # the SUBACK may be behind messages the broker sent first
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                return await waiter
        except TimeoutError:
            raise MqttError(f"no SUBACK for {topic_filter!r} within "
                            f"{CONNECT_TIMEOUT_S:.0f} s") from None
        finally:
            self._subacks.pop(packet_id, None)

    @property
    def queued(self) -> int:
        """Messages received and not yet taken."""
        return len(self._queue)

    async def next_message(self, stop: asyncio.Event | None = None) -> Message | None:
        """The next message; None once ``stop`` is set. Raises MqttError when the session ends."""
        while not self._queue:
            self._raise_if_lost()
            if stop is not None and stop.is_set():
                return None
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._message_waiter = waiter
            try:
                if stop is None:
                    await waiter
                else:
                    stopped = asyncio.ensure_future(stop.wait())
                    try:
                        await asyncio.wait((waiter, stopped),
                                           return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        stopped.cancel()
            finally:
                self._message_waiter = None
        return self.take(1)[0]

    def take(self, most: int) -> list[Message]:
        """Up to ``most`` messages already received, without waiting."""
        queue = self._queue
        taken = [queue.popleft() for _ in range(min(most, len(queue)))]
        self._resume_if_room()
        return taken

    def acknowledge(self, messages: Sequence[Message]) -> None:
        """PUBACK these messages (one write): call only once they are stored and answered."""
        ids = [m.packet_id for m in messages if m.qos]
        if ids:
            self._write(encode_pubacks(ids))

    # ------------------------------------------------------------------ publishing
    def publish(self, messages: Sequence[tuple[str, bytes]]) -> None:
        """Publish at QoS 1 without waiting: what fits the broker's Receive Maximum is written
        now, the rest as soon as its PUBACKs make room (in order).

        Not waiting is what keeps memory bounded: the PUBACKs that make room may sit behind
        messages the broker keeps sending, which the client only reads while fewer than
        ``receive_maximum`` wait. Answers are small; more than :data:`MAX_HELD` held ends the
        session (the broker has stopped answering)."""
        self._raise_if_lost()
        self._held.extend(messages)
        self._send_held()
        if len(self._held) > MAX_HELD:
            error = MqttError(f"{len(self._held)} answers waiting for room at the broker: it "
                              f"has stopped acknowledging them")
            self._abort()
            self._lost(error)
            raise error

    def _send_held(self) -> None:
        room = self.broker_receive_maximum - len(self._in_flight)
        if room <= 0 or not self._held:
            return
        packets = []
        for _ in range(min(room, len(self._held))):
            topic, payload = self._held.popleft()
            packet_id = self._allocate_id()
            self._in_flight[packet_id] = topic
            packets.append(encode_publish_qos1(packet_id, topic, payload))
        self._write(b"".join(packets))

    def _allocate_id(self) -> int:
        """A packet identifier not in use (the in-flight window is at most 65,535 wide)."""
        if len(self._in_flight) + len(self._subacks) >= 65535:
            raise MqttError("no free packet identifier: 65,535 publishes unanswered")
        while True:
            self._next_id = self._next_id % 65535 + 1
            candidate = self._next_id
            if candidate not in self._in_flight and candidate not in self._subacks:
                return candidate

    # ------------------------------------------------------------------ the wire
    def _write(self, data: bytes) -> None:
        self._raise_if_lost()
        transport = self._transport
        if transport is None or transport.is_closing():
            raise MqttError("not connected")
        transport.write(data)

    def _raise_if_lost(self) -> None:
        if self._error is not None:
            raise self._error

    def _data_received(self, data: bytes) -> None:
        self._last_received = time.monotonic()
        try:
            messages, others = self._reader.feed(data)
            for kind, flags, body in others:
                self._control(kind, flags, body)
        except ProtocolError as exc:
            log.warning("MQTT protocol error; reconnecting",
                        extra={"event": "ingest_mqtt_protocol_error", "reason": str(exc)})
            self._abort()
            self._lost(exc)
            return
        if messages:
            self._queue.extend(messages)
            waiter = self._message_waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
            if (len(self._queue) >= self.settings.receive_maximum and not self._awaiting_answers()
                    and not self._paused and self._transport is not None):
                self._transport.pause_reading()
                self._paused = True

    def _awaiting_answers(self) -> bool:
        """A SUBACK we wait for may be behind messages the broker sent first."""
        return bool(self._subacks)

    def _resume_if_room(self) -> None:
        if self._paused and len(self._queue) < max(1, self.settings.receive_maximum // 2):
            self._resume_reading()

    def _resume_reading(self) -> None:
        if self._paused and self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()
        self._paused = False

    def _control(self, kind: int, flags: int, body: bytes) -> None:
        if kind == _PUBACK:
            self._puback(body)
        elif kind == _CONNACK:
            self._on_connack(body)
        elif kind == _SUBACK:
            self._suback(body)
        elif kind == _PINGRESP:
            pass
        elif kind == _DISCONNECT:
            code = body[0] if body else 0
            props = read_properties(body, 1, len(body))[0] if len(body) > 1 else {}
            why = props.get(REASON_STRING)
            raise ProtocolError(f"the broker disconnected: {reason_text(code)}"
                                + (f": {why}" if why else ""))
        else:
            raise ProtocolError(f"unexpected packet type {kind} (this client does not "
                                f"support it)")

    def _on_connack(self, body: bytes) -> None:
        if len(body) < 2:
            raise ProtocolError("malformed CONNACK")
        props = read_properties(body, 2, len(body))[0] if len(body) > 2 else {}
        if self._connack is not None and not self._connack.done():
            self._connack.set_result((body[0], body[1], props))

    def _suback(self, body: bytes) -> None:
        if len(body) < 3:
            raise ProtocolError("malformed SUBACK")
        packet_id = (body[0] << 8) | body[1]
        _, pos = read_properties(body, 2, len(body))
        waiter = self._subacks.get(packet_id)
        if waiter is not None and not waiter.done():
            waiter.set_result(list(body[pos:]))

    def _puback(self, body: bytes) -> None:
        if len(body) < 2:
            raise ProtocolError("malformed PUBACK")
        packet_id = (body[0] << 8) | body[1]
        topic = self._in_flight.pop(packet_id, None)
        code = body[2] if len(body) > 2 else 0
        if code >= 0x80:
            self.refused_answers += 1
            log.warning("the broker refused an answer to a gateway",
                        extra={"event": "ingest_answer_refused", "topic": topic,
                               "reason": reason_text(code)})
        if self._held:
            self._send_held()

    def _lost(self, error: MqttError) -> None:
        if self._error is not None:
            return
        self._error = error
        self._queue.clear()  # unacknowledged: the broker sends them again
        if self._message_waiter is not None and not self._message_waiter.done():
            self._message_waiter.set_result(None)  # next_message raises the error
        failed: list[asyncio.Future[list[int]] | asyncio.Future[tuple[int, int, dict[int, object]]]]
        failed = [*self._subacks.values()]
        if self._connack is not None:
            failed.append(self._connack)
        for future in failed:
            if not future.done():
                future.set_exception(error)
        if self._keepalive is not None and self._keepalive is not asyncio.current_task():
            self._keepalive.cancel()
