"""The journal: append-only segment files holding what is committed but not in the database.

Owns ``<outbox>.j<NNNNNN>`` files. Every group commit appends one record (its encoded group,
the state staged with it, any dictionary entries it introduced); confirmations append small
settle records. A record is ``length (u32) · crc32 (u32) · kind (u8) · CBOR payload``; replay
stops at the first record that is short or fails its CRC (a torn write at a crash) and cuts the
file there.

Why a journal in front of SQLite: an observation the twin confirms within the spill window is
never written anywhere else, and a plain append dirties a page of the page cache only once per
~4 KiB instead of rewriting several B-tree pages and WAL frames per commit. Appends survive a
``kill -9`` (the page cache belongs to the kernel); with ``durability = "full"`` each commit
ends with ``fdatasync`` so they also survive a power cut. A segment is rotated at
``SEGMENT_BYTES`` and deleted once nothing in it is still needed.
"""

from __future__ import annotations

import contextlib
import os
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import cbor2

SEGMENT_BYTES = 1 << 20
GROUP, SETTLE, STATE, DICT = 1, 2, 3, 4
_HEADER = struct.Struct("<IIB")


class Journal:
    """Segment files beside the database. ``OSError`` from :meth:`append` leaves no partial record."""

    def __init__(self, outbox_path: Path, durable: bool) -> None:
        self.dir = outbox_path.parent
        self.prefix = outbox_path.name + ".j"
        self.durable = durable
        self._fd: int | None = None
        self._offset = 0
        self.active = 0  # segment number being appended to (0: none yet)
        self.synced_offset = 0
        self._needs_header = False
        self._sizes: dict[int, int] | None = None  # bytes per segment, once known
        # the record every new segment starts with (the dictionary), so it decodes on its own
        self.header: Callable[[], tuple[int, object]] | None = None

    # ------------------------------------------------------------------ files
    def _path(self, segment: int) -> Path:
        return self.dir / f"{self.prefix}{segment:06d}"

    def segments(self) -> list[int]:
        out = []
        for p in self.dir.glob(self.prefix + "*"):
            suffix = p.name[len(self.prefix):]
            if suffix.isdigit():
                out.append(int(suffix))
        return sorted(out)

    def size_bytes(self) -> int:
        total = 0
        for seg in self.segments():
            with contextlib.suppress(OSError):
                total += self._path(seg).stat().st_size
        return total

    # ------------------------------------------------------------------ reading
    def replay(self, cut_torn_tail: bool = True) -> Iterator[tuple[int, int, object]]:
        """Every intact record ``(segment, kind, payload)``, oldest first.

        A record that is short or fails its CRC ends its segment; with ``cut_torn_tail`` the
        file is cut there (the owner, at open; readers of a live outbox pass False).
        """
        for seg in self.segments():
            path = self._path(seg)
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue  # retired meanwhile
            pos = 0
            while pos + _HEADER.size <= len(data):
                length, crc, kind = _HEADER.unpack_from(data, pos)
                body = data[pos + _HEADER.size : pos + _HEADER.size + length]
                if len(body) != length or zlib.crc32(bytes([kind]) + body) != crc:
                    break
                try:
                    payload = cbor2.loads(body)
                except (cbor2.CBORDecodeError, ValueError):
                    break
                yield seg, kind, payload
                pos += _HEADER.size + length
            if pos < len(data) and cut_torn_tail:
                with open(path, "r+b") as fh:
                    fh.truncate(pos)  # a torn record: what follows it was never acknowledged

    # ------------------------------------------------------------------ writing
    def append(self, kind: int, payload: object, sync: bool = True) -> int:
        """Append one record; returns its segment. With ``durable``, fdatasync before returning."""
        if self._fd is None or self._offset >= SEGMENT_BYTES:
            self._open_next()
        if self._needs_header and self.header is not None:
            head_kind, head = self.header()
            self._needs_header = False
            try:
                self.append(head_kind, head, sync=False)
            except OSError:
                self._needs_header = True
                raise
        assert self._fd is not None
        body = cbor2.dumps(payload)
        record = _HEADER.pack(len(body), zlib.crc32(bytes([kind]) + body), kind) + body
        start = self._offset
        try:
            view = memoryview(record)
            while view:
                written = os.pwrite(self._fd, view, self._offset)
                self._offset += written
                view = view[written:]
            if self._sizes is not None:
                self._sizes[self.active] = self._offset
            if self.durable and sync:
                os.fdatasync(self._fd)
                self.synced_offset = self._offset
        except OSError:
            self._offset = start
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, start)
            raise
        return self.active

    def full(self) -> bool:
        """The active segment has reached its size: the next append starts a new one."""
        return self._offset >= SEGMENT_BYTES

    def sync(self) -> None:
        if self._fd is not None and self.durable and self.synced_offset < self._offset:
            os.fdatasync(self._fd)
            self.synced_offset = self._offset

    def _open_next(self) -> None:
        self._close_fd()
        nxt = max([self.active, *self.segments()], default=0) + 1
        fd = os.open(self._path(nxt), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        if self.durable:
            _fsync_dir(self.dir)
        self._fd, self._offset, self.active, self.synced_offset = fd, 0, nxt, 0
        if self._sizes is not None:
            self._sizes[nxt] = 0
        self._needs_header = True

    def _close_fd(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # ------------------------------------------------------------------ retiring
    def retire(self, segments: list[int]) -> None:
        """Delete segments whose every record is confirmed or in the database."""
        for seg in segments:
            if seg == self.active:
                self._close_fd()
                self.active = seg  # the next append opens a new segment after it
                self._offset = 0
            self._path(seg).unlink(missing_ok=True)
            if self._sizes is not None:
                self._sizes.pop(seg, None)

    def close(self) -> None:
        self._close_fd()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
