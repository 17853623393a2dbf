# duet-edge node protocol v1: framing (COBS), message body (CBOR subset) and CRC.
#
# This file is the ONE implementation of the wire format. It runs unchanged on the node
# (MicroPython >= 1.22) and on the gateway (CPython >= 3.11, imported by ``edge.node``), so
# it is written in the subset both interpreters share: no typing/dataclasses/f-string
# formatting specs, no ``int.to_bytes`` keyword arguments, only ``struct`` and ``binascii``.
# docs/node-protocol.md is the normative specification; tests/vectors/node/*.json hold
# frames and their meaning that both interpreters must agree on.
#
# Why a CBOR subset and not a library: MicroPython ships no CBOR module, and the node only
# needs unsigned/negative integers, byte and text strings, arrays, maps, false/true/null and
# floats. The encoder is deterministic (shortest integer heads, float32 for every float, map
# keys sorted by their encoded bytes as in RFC 8949 section 4.2.1) so that both interpreters
# produce identical bytes; the gateway's tests check that ``cbor2`` decodes the same bytes to
# the same values.

import struct
from binascii import crc32

MAJOR = 1
MINOR = 0
VERSION_BYTE = (MAJOR << 4) | MINOR
MAX_FRAME = 1024  # decoded frame (header + body + CRC) limit in bytes
MAX_DEPTH = 8  # CBOR nesting limit

# Message types (byte 1 of a frame).
HELLO = 1  # node -> gateway
BATCH = 2  # node -> gateway
ACK = 3  # gateway -> node, cumulative
TIME = 4  # gateway -> node
CFG_GET = 5  # gateway -> node
CFG = 6  # node -> gateway (current config) and gateway -> node (set, partial)
LOG = 7  # node -> gateway: error/log
SYNC = 8  # gateway -> node: "send a hello" (gateway restarted, session unknown)

TYPE_NAMES = {
    HELLO: "hello",
    BATCH: "batch",
    ACK: "ack",
    TIME: "time",
    CFG_GET: "cfg_get",
    CFG: "cfg",
    LOG: "log",
    SYNC: "sync",
}
TYPE_CODES = {v: k for k, v in TYPE_NAMES.items()}

# Field names <-> integer map keys, per message type. Unknown integer keys are ignored on
# decode so that a minor version may add fields.
FIELDS = {
    HELLO: (
        ("node_id", 1),
        ("firmware", 2),
        ("protocol", 3),
        ("kind", 4),
        ("sensors", 5),
        ("oldest", 6),
        ("next_seq", 7),
        ("boot", 8),
    ),
    BATCH: (("seq", 1), ("t0_ms", 2), ("age_ms", 3), ("records", 4), ("oldest", 5)),
    ACK: (("seq", 1),),
    TIME: (("epoch_ms", 1),),
    CFG_GET: (),
    CFG: (("config", 1),),
    LOG: (("level", 1), ("code", 2), ("text", 3)),
    SYNC: (),
}

# Required fields per type (checked by decode_message).
REQUIRED = {
    HELLO: ("node_id", "firmware", "protocol", "sensors"),
    BATCH: ("seq", "records"),
    ACK: ("seq",),
    TIME: ("epoch_ms",),
    CFG_GET: (),
    CFG: ("config",),
    LOG: ("level", "text"),
    SYNC: (),
}

LOG_LEVELS = ("debug", "info", "warning", "error")


class ProtocolError(ValueError):
    """A frame that cannot be accepted; ``reason`` is a short counter name."""

    def __init__(self, reason, detail=""):
        super().__init__(reason + (": " + detail if detail else ""))
        self.reason = reason
        self.detail = detail


# ---------------------------------------------------------------- COBS (Cheshire & Baker)


def cobs_encode(data):
    """COBS-encode ``data`` (no zero byte in the result; the caller appends the 0x00)."""
    out = bytearray()
    code_pos = 0
    out.append(0)
    code = 1
    for b in data:
        if b == 0:
            out[code_pos] = code
            code_pos = len(out)
            out.append(0)
            code = 1
        else:
            out.append(b)
            code += 1
            if code == 0xFF:
                out[code_pos] = code
                code_pos = len(out)
                out.append(0)
                code = 1
    out[code_pos] = code
    return bytes(out)


def cobs_decode(data):
    """Decode one COBS block (without the trailing 0x00); raises ProtocolError("cobs")."""
    out = bytearray()
    i = 0
    n = len(data)
    while i < n:
        code = data[i]
        if code == 0:
            raise ProtocolError("cobs", "zero byte inside frame")
        end = i + code
        if end > n:
            raise ProtocolError("cobs", "truncated block")
        out.extend(data[i + 1 : end])
        i = end
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)


# ---------------------------------------------------------------- CBOR subset


def _head(major, value, out):
    mt = major << 5
    if value < 24:
        out.append(mt | value)
    elif value < 0x100:
        out.append(mt | 24)
        out.append(value)
    elif value < 0x10000:
        out.append(mt | 25)
        out.extend(struct.pack(">H", value))
    elif value < 0x100000000:
        out.append(mt | 26)
        out.extend(struct.pack(">I", value))
    elif value < 0x10000000000000000:
        out.append(mt | 27)
        out.extend(struct.pack(">Q", value))
    else:
        raise ValueError("integer out of CBOR range")


class RawCBOR:
    """Bytes that are already one encoded CBOR item (the node keeps batches pre-encoded)."""

    def __init__(self, data):
        self.data = data


def cbor_dumps(obj):
    """Encode ``obj`` deterministically (see the module comment)."""
    out = bytearray()
    _enc(obj, out, 0)
    return bytes(out)


def _enc(obj, out, depth):
    if depth > MAX_DEPTH:
        raise ValueError("nesting too deep")
    if isinstance(obj, RawCBOR):
        out.extend(obj.data)
    elif obj is None:
        out.append(0xF6)
    elif obj is True:
        out.append(0xF5)
    elif obj is False:
        out.append(0xF4)
    elif isinstance(obj, int):
        if obj >= 0:
            _head(0, obj, out)
        else:
            _head(1, -1 - obj, out)
    elif isinstance(obj, float):
        out.append(0xFA)
        out.extend(struct.pack(">f", obj))
    elif isinstance(obj, str):
        raw = obj.encode("utf-8")
        _head(3, len(raw), out)
        out.extend(raw)
    elif isinstance(obj, (bytes, bytearray)):
        _head(2, len(obj), out)
        out.extend(obj)
    elif isinstance(obj, (list, tuple)):
        _head(4, len(obj), out)
        for item in obj:
            _enc(item, out, depth + 1)
    elif isinstance(obj, dict):
        pairs = []
        for k, v in obj.items():
            kb = bytearray()
            _enc(k, kb, depth + 1)
            pairs.append((bytes(kb), v))
        pairs.sort(key=lambda p: p[0])
        _head(5, len(pairs), out)
        for kb, v in pairs:
            out.extend(kb)
            _enc(v, out, depth + 1)
    else:
        raise ValueError("cannot encode " + str(type(obj)))


def cbor_loads(data):
    """Decode exactly one CBOR item filling ``data``; raises ProtocolError("cbor")."""
    try:
        value, pos = _dec(data, 0, 0)
    except ProtocolError:
        raise
    except Exception as exc:  # IndexError, struct.error, UnicodeError...
        raise ProtocolError("cbor", str(exc)) from None
    if pos != len(data):
        raise ProtocolError("cbor", "trailing bytes")
    return value


def _need(data, pos, n):
    if pos + n > len(data):
        raise ProtocolError("cbor", "truncated")


def _arg(data, pos, info):
    if info < 24:
        return info, pos
    if info == 24:
        _need(data, pos, 1)
        return data[pos], pos + 1
    if info == 25:
        _need(data, pos, 2)
        return struct.unpack(">H", data[pos : pos + 2])[0], pos + 2
    if info == 26:
        _need(data, pos, 4)
        return struct.unpack(">I", data[pos : pos + 4])[0], pos + 4
    if info == 27:
        _need(data, pos, 8)
        return struct.unpack(">Q", data[pos : pos + 8])[0], pos + 8
    raise ProtocolError("cbor", "unsupported length encoding")


def _half(bits):
    exp = (bits >> 10) & 0x1F
    frac = bits & 0x3FF
    if exp == 0:
        val = frac * 2.0**-24
    elif exp == 31:
        val = float("inf") if frac == 0 else float("nan")
    else:
        val = (1024 + frac) * 2.0 ** (exp - 25)
    return -val if bits & 0x8000 else val


def _dec(data, pos, depth):
    if depth > MAX_DEPTH:
        raise ProtocolError("cbor", "nesting too deep")
    _need(data, pos, 1)
    ib = data[pos]
    pos += 1
    major = ib >> 5
    info = ib & 0x1F
    if major == 7:
        if info == 20:
            return False, pos
        if info == 21:
            return True, pos
        if info == 22:
            return None, pos
        if info == 25:
            _need(data, pos, 2)
            return _half(struct.unpack(">H", data[pos : pos + 2])[0]), pos + 2
        if info == 26:
            _need(data, pos, 4)
            return struct.unpack(">f", data[pos : pos + 4])[0], pos + 4
        if info == 27:
            _need(data, pos, 8)
            return struct.unpack(">d", data[pos : pos + 8])[0], pos + 8
        raise ProtocolError("cbor", "unsupported simple value")
    arg, pos = _arg(data, pos, info)
    if major == 0:
        return arg, pos
    if major == 1:
        return -1 - arg, pos
    if major == 2 or major == 3:
        _need(data, pos, arg)
        raw = bytes(data[pos : pos + arg])
        pos += arg
        if major == 2:
            return raw, pos
        try:
            return raw.decode("utf-8"), pos
        except Exception:
            raise ProtocolError("cbor", "bad utf-8") from None
    if major == 4:
        if arg > len(data) - pos:
            raise ProtocolError("cbor", "array longer than frame")
        items = []
        for _ in range(arg):
            item, pos = _dec(data, pos, depth + 1)
            items.append(item)
        return items, pos
    if major == 5:
        if arg * 2 > len(data) - pos:
            raise ProtocolError("cbor", "map longer than frame")
        result = {}
        for _ in range(arg):
            key, pos = _dec(data, pos, depth + 1)
            if isinstance(key, (list, dict)):
                raise ProtocolError("cbor", "unhashable map key")
            value, pos = _dec(data, pos, depth + 1)
            result[key] = value
        return result, pos
    raise ProtocolError("cbor", "tags are not used by this protocol")


# ---------------------------------------------------------------- frames


def _crc(data):
    return crc32(data) & 0xFFFFFFFF


def build_frame(mtype, body_map):
    """Frame bytes on the wire: COBS(version, type, CBOR body, CRC-32 BE) + 0x00."""
    payload = bytearray()
    payload.append(VERSION_BYTE)
    payload.append(mtype)
    payload.extend(cbor_dumps(body_map))
    payload.extend(struct.pack(">I", _crc(payload)))
    if len(payload) > MAX_FRAME:
        raise ValueError("frame too large")
    return cobs_encode(payload) + b"\x00"


def parse_frame(block):
    """Decode one COBS block (delimiter stripped) into ``(type, version_byte, raw body)``.

    Checks, in this order, so that reasons are stable: COBS, length, major version, CRC,
    message type, CBOR. ``raw body`` is the decoded CBOR item (a map for every v1 type).
    """
    if len(block) > MAX_FRAME + MAX_FRAME // 254 + 2:
        raise ProtocolError("oversize", str(len(block)))
    payload = cobs_decode(block)
    if len(payload) < 7:
        raise ProtocolError("short", str(len(payload)))
    version = payload[0]
    if version >> 4 != MAJOR:
        raise ProtocolError("version", "major " + str(version >> 4))
    got = struct.unpack(">I", payload[-4:])[0]
    if got != _crc(payload[:-4]):
        raise ProtocolError("crc")
    mtype = payload[1]
    if mtype not in TYPE_NAMES:
        raise ProtocolError("type", str(mtype))
    body = cbor_loads(payload[2:-4])
    if not isinstance(body, dict):
        raise ProtocolError("schema", "body is not a map")
    return mtype, version, body


def encode_message(msg):
    """Frame bytes for a message dict ``{"type": name, field: value...}``."""
    mtype = TYPE_CODES[msg["type"]]
    body = {}
    for name, key in FIELDS[mtype]:
        if name in msg and msg[name] is not None:
            body[key] = msg[name]
    return build_frame(mtype, body)


def decode_message(block):
    """Parse and validate one COBS block into a message dict (see encode_message)."""
    mtype, version, body = parse_frame(block)
    msg = {"type": TYPE_NAMES[mtype]}
    for name, key in FIELDS[mtype]:
        if key in body:
            msg[name] = body[key]
    for name in REQUIRED[mtype]:
        if name not in msg:
            raise ProtocolError("schema", "missing " + name)
    _validate(mtype, msg)
    if version != VERSION_BYTE:
        msg["version"] = version
    return msg


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check(cond, what):
    if not cond:
        raise ProtocolError("schema", what)


def _validate(mtype, msg):
    if mtype == HELLO:
        _check(isinstance(msg["node_id"], str) and 0 < len(msg["node_id"]) <= 32, "node_id")
        _check(isinstance(msg["firmware"], str) and len(msg["firmware"]) <= 32, "firmware")
        p = msg["protocol"]
        _check(isinstance(p, list) and len(p) == 2 and _is_int(p[0]) and _is_int(p[1]), "protocol")
        _check(isinstance(msg["sensors"], list), "sensors")
        for s in msg["sensors"]:
            _check(isinstance(s, list) and len(s) == 3, "sensor entry")
            _check(isinstance(s[0], str) and isinstance(s[1], str), "sensor name/model")
            _check(isinstance(s[2], list) and all(isinstance(q, str) for q in s[2]), "sensor quantities")
        for name in ("oldest", "next_seq", "boot"):
            if name in msg:
                _check(_is_int(msg[name]) and msg[name] >= 0, name)
    elif mtype == BATCH:
        _check(_is_int(msg["seq"]) and msg["seq"] > 0, "seq")
        _check(("t0_ms" in msg) != ("age_ms" in msg), "exactly one of t0_ms / age_ms")
        for name in ("t0_ms", "age_ms", "oldest"):
            if name in msg:
                _check(_is_int(msg[name]) and msg[name] >= 0, name)
        _check(isinstance(msg["records"], list), "records")
        for r in msg["records"]:
            _check(isinstance(r, list) and len(r) == 5, "record length")
            _check(_is_int(r[0]) and r[0] >= 0, "record sensor index")
            _check(isinstance(r[1], str), "record quantity")
            _check(_is_num(r[2]), "record value")
            _check(_is_int(r[3]) and _is_int(r[4]) and r[4] >= 0, "record times")
    elif mtype == ACK:
        _check(_is_int(msg["seq"]) and msg["seq"] >= 0, "seq")
    elif mtype == TIME:
        _check(_is_int(msg["epoch_ms"]) and msg["epoch_ms"] >= 0, "epoch_ms")
    elif mtype == CFG:
        _check(isinstance(msg["config"], dict), "config")
    elif mtype == LOG:
        _check(msg["level"] in LOG_LEVELS, "level")
        _check(isinstance(msg["text"], str), "text")


class FrameReader:
    """Incremental splitter: ``feed(bytes)`` returns complete COBS blocks (no delimiter).

    Keeps at most ``limit`` bytes of a partial frame; longer runs are discarded up to the
    next delimiter and counted in ``overflows``.
    """

    def __init__(self, limit=MAX_FRAME + 8):
        self.buf = bytearray()
        self.limit = limit
        self.overflows = 0
        self.skipping = False

    def feed(self, data):
        blocks = []
        for b in data:
            if b == 0:
                if self.skipping:
                    self.skipping = False
                elif self.buf:
                    blocks.append(bytes(self.buf))
                self.buf = bytearray()
            elif not self.skipping:
                if len(self.buf) >= self.limit:
                    self.overflows += 1
                    self.skipping = True
                    self.buf = bytearray()
                else:
                    self.buf.append(b)
        return blocks


# ---------------------------------------------------------------- BLE advertisement

COMPANY_ID = 0xFFFF  # Bluetooth SIG: reserved for testing; never ship it in a product
BLE_VERSION = 0x10  # v1.0, same nibble rule as serial frames

# Quantity id -> (code, divisor, offset, signed). value = raw / divisor + offset.
# Raw 0xFFFF (unsigned) or -0x8000 (signed) means "not available".
BLE_QUANTITIES = {
    1: ("pm2_5", 10, 0, False),
    2: ("pm10", 10, 0, False),
    3: ("pm1", 10, 0, False),
    4: ("temperature", 100, 0, True),
    5: ("humidity", 100, 0, False),
    6: ("pressure", 1, 50000, False),
    7: ("battery_voltage", 1000, 0, False),
    8: ("traffic_count", 1, 0, False),
    9: ("v85", 10, 0, False),
}
BLE_IDS = {v[0]: k for k, v in BLE_QUANTITIES.items()}
BLE_MAX_VALUES = 6


def encode_advert(node_short, seq, values):
    """Manufacturer data (company id LE first): id, version, seq, 4-byte node id, values.

    ``values`` is a list of ``(quantity code, value or None)``, at most BLE_MAX_VALUES.
    """
    if len(values) > BLE_MAX_VALUES:
        raise ValueError("too many values for one advertisement")
    out = bytearray(struct.pack("<HBB", COMPANY_ID, BLE_VERSION, seq & 0xFF))
    out.extend(struct.pack(">I", node_short & 0xFFFFFFFF))
    for code, value in values:
        qid = BLE_IDS[code]
        _, div, offset, signed = BLE_QUANTITIES[qid]
        if value is None:
            raw = -0x8000 if signed else 0xFFFF
        else:
            raw = round((value - offset) * div)
            lo, hi = (-0x7FFF, 0x7FFF) if signed else (0, 0xFFFE)
            raw = lo if raw < lo else hi if raw > hi else raw
        out.append(qid)
        out.extend(struct.pack(">h" if signed else ">H", raw))
    return bytes(out)


def decode_advert(data):
    """Decode manufacturer data (as encode_advert) into a dict; raises ProtocolError."""
    if len(data) < 8:
        raise ProtocolError("short", str(len(data)))
    company, version, seq = struct.unpack("<HBB", data[:4])
    if company != COMPANY_ID:
        raise ProtocolError("company", hex(company))
    if version >> 4 != BLE_VERSION >> 4:
        raise ProtocolError("version", "major " + str(version >> 4))
    if (len(data) - 8) % 3:
        raise ProtocolError("schema", "value block length")
    node_short = struct.unpack(">I", data[4:8])[0]
    values = []
    for pos in range(8, len(data), 3):
        qid = data[pos]
        if qid not in BLE_QUANTITIES:
            raise ProtocolError("quantity", str(qid))
        code, div, offset, signed = BLE_QUANTITIES[qid]
        raw = struct.unpack(">h" if signed else ">H", data[pos + 1 : pos + 3])[0]
        if raw == (-0x8000 if signed else 0xFFFF):
            values.append([code, None])
        else:
            values.append([code, raw / div + offset])
    return {"node": f"{node_short:08x}", "seq": seq, "version": version, "values": values}
