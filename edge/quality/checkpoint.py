"""The quality stage's durable learned state: one compact blob, staged with the outbox.

Layout: ``b"DQC1"`` then zlib of repeated records ``u16 key length, key (UTF-8, the
datastream key "sensor/quantity"), u16 rules length, rules state, u16 detector length,
detector state`` (each state as written by ``StreamRules.to_bytes`` and
``StreamDetector.to_bytes``; an empty detector state means "no detector").
"""

from __future__ import annotations

import struct
import zlib

MAGIC = b"DQC1"
_LEN = struct.Struct("<H")

StreamState = tuple[bytes, bytes]  # (rules state, detector state)


def encode(states: dict[str, StreamState]) -> bytes:
    """One blob holding every datastream's state."""
    parts: list[bytes] = []
    for key, (rules, detector) in sorted(states.items()):
        for item in (key.encode(), rules, detector):
            parts.append(_LEN.pack(len(item)))
            parts.append(item)
    return MAGIC + zlib.compress(b"".join(parts), 9)


def decode(blob: bytes) -> dict[str, StreamState]:
    """The states in ``blob``; ValueError naming the problem when it is not a checkpoint."""
    if not blob.startswith(MAGIC):
        raise ValueError("not a quality checkpoint (unknown header)")
    try:
        raw = zlib.decompress(blob[len(MAGIC) :])
    except zlib.error as exc:
        raise ValueError(f"quality checkpoint is corrupt ({exc})") from None
    states: dict[str, StreamState] = {}
    at = 0
    try:
        while at < len(raw):
            items = []
            for _ in range(3):
                (size,) = _LEN.unpack_from(raw, at)
                at += _LEN.size
                if at + size > len(raw):
                    raise ValueError("quality checkpoint is truncated")
                items.append(raw[at : at + size])
                at += size
            states[items[0].decode()] = (items[1], items[2])
    except (struct.error, UnicodeDecodeError) as exc:
        raise ValueError(f"quality checkpoint is corrupt ({exc})") from None
    return states
