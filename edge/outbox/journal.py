"""The journal: append-only segment files holding what is committed but not in the database.

Owns ``<outbox>.j<NNNNNN>`` files (and one spare, ``<outbox>.jspare<NNNNNN>``). Every group commit
appends one record (its encoded group, the state staged with it, any dictionary entries it
introduced); confirmations append small settle records; every segment starts with the whole
dictionary, so it decodes on its own. A record is

    length (u32) · crc32 (u32) · kind (u8) · CBOR payload

where the CRC covers the segment number, the kind and the payload: a record left over from a
file's earlier life as another segment never validates. Replay stops at the first record that
is short or fails its CRC (a write torn by a crash: it was never acknowledged).

Why a journal in front of SQLite: an observation the twin confirms within the spill window is
never written anywhere else, and an append costs only the bytes appended instead of several
B-tree pages and WAL frames per commit.

* ``durability = "normal"``: plain appends to a growing file, no fsync. They survive a
  ``kill -9`` (the page cache belongs to the kernel); a power cut loses what the kernel had not
  yet written back (Linux writes dirty pages back after ~30 s).
* ``durability = "full"``: every commit is on the storage before ``commit`` returns. Segments
  are **preallocated** (written with zeros once, then recycled), so a commit overwrites
  allocated blocks and ``fdatasync`` never has to commit file-system metadata; records are
  written with **direct I/O** padded to 512-byte sectors, so a commit of 20 observations
  writes one sector instead of dirtying a 4 KiB page (and never rewrites a sector holding an
  earlier, acknowledged record). Where direct I/O is not supported, buffered writes +
  ``fdatasync`` do the same job with page granularity.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import mmap
import os
import struct
import sys
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import cbor2

from edge.outbox.sequence import fsync_dir

SEGMENT_BYTES = 1 << 20
SECTOR = 512
DIRECT_BUFFER = 1 << 16  # initial size of the page-aligned buffer for direct writes
GROUP, SETTLE, STATE, DICT = 1, 2, 3, 4
PADDED = 0x80  # kind flag: the record is followed by zeros up to the next sector boundary
_HEADER = struct.Struct("<IIB")

log = logging.getLogger("duet.outbox")


def _crc(segment: int, kind: int, body: bytes) -> int:
    return zlib.crc32(body, zlib.crc32(struct.pack("<IB", segment, kind)))


def _align(n: int) -> int:
    return -(-n // SECTOR) * SECTOR


def parse_records(segment: int, data: bytes, pos: int = 0) -> Iterator[tuple[int, int, object]]:
    """The intact records of segment ``segment`` in ``data`` from offset ``pos``, as
    ``(offset after the record, kind, payload)``; stops at the first short or bad record.

    Also for readers that follow a live journal from outside (``hil/chaos``): a record the
    writer has not finished yet is short, so it is simply read again later.
    """
    while pos + _HEADER.size <= len(data):
        length, crc, kind = _HEADER.unpack_from(data, pos)
        body = data[pos + _HEADER.size : pos + _HEADER.size + length]
        if len(body) != length or _crc(segment, kind, body) != crc:
            return
        try:
            payload = cbor2.loads(body)
        except (cbor2.CBORDecodeError, ValueError):
            return
        pos += _HEADER.size + length
        if kind & PADDED:
            pos = _align(pos)
        yield pos, kind & ~PADDED, payload


class Journal:
    """Segment files beside the database. ``OSError`` from :meth:`append` leaves no record."""

    def __init__(self, outbox_path: Path, durable: bool) -> None:
        self.dir = outbox_path.parent
        self.prefix = outbox_path.name + ".j"
        self.durable = durable
        self.direct = durable and sys.platform == "linux"
        self._fd: int | None = None  # buffered descriptor of the active segment
        self._dfd: int | None = None  # O_DIRECT descriptor of the same file ("full")
        self._offset = 0
        self.active = 0  # segment number being appended to (0: none yet)
        self.synced_offset = 0
        self._needs_header = False
        self._sizes: dict[int, int] = {}
        self._buffer: mmap.mmap | None = None  # page-aligned buffer for direct writes
        # the record every new segment starts with (the dictionary), so it decodes on its own
        self.header: Callable[[], tuple[int, object]] | None = None

    # ------------------------------------------------------------------ files
    def _path(self, segment: int) -> Path:
        return self.dir / f"{self.prefix}{segment:06d}"

    def _spare_path(self, segment: int) -> Path:
        """Where a retired segment waits to be reused, named with its last number."""
        return self.dir / f"{self.prefix}spare{segment:06d}"

    def _spares(self) -> list[tuple[int, Path]]:
        """Kept spares with the last segment number each carried.

        A recycled file still holds its earlier records past what its new life writes; they
        never validate only while the new number differs from every number the file had, so a
        new segment is numbered above the spare's. A spare of an earlier version (``jspare``,
        number unknown) is deleted: its stale records could validate for a reused number
        (found while building the chaos campaign: stale records rolled staged state back).
        """
        out = []
        for p in self.dir.glob(f"{self.prefix}spare*"):
            suffix = p.name[len(self.prefix) + len("spare"):]
            if suffix.isdigit():
                out.append((int(suffix), p))
            else:
                p.unlink(missing_ok=True)
        return sorted(out)

    def segments(self) -> list[int]:
        out = []
        for p in self.dir.glob(self.prefix + "*"):
            suffix = p.name[len(self.prefix) :]
            if suffix.isdigit():
                out.append(int(suffix))
        return sorted(out)

    def size_bytes(self) -> int:
        """Bytes written to segment files (the active one as far as it is used)."""
        return sum(self._sizes.values())

    # ------------------------------------------------------------------ reading
    def replay(self, cut_torn_tail: bool = True) -> Iterator[tuple[int, int, object]]:
        """Every intact record ``(segment, kind, payload)``, oldest first.

        A record that is short or fails its CRC ends its segment; with ``cut_torn_tail`` a
        growing (``normal``) file is cut there (the owner, at open; readers of a live outbox
        pass False).
        """
        for seg in self.segments():
            path = self._path(seg)
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue  # retired meanwhile
            pos = 0
            for end, kind, payload in parse_records(seg, data):
                yield seg, kind, payload
                pos = end
            self._sizes[seg] = pos
            if pos < len(data) and cut_torn_tail and not self.direct:
                with open(path, "r+b") as fh:
                    fh.truncate(pos)  # a torn record: what follows it was never acknowledged

    # ------------------------------------------------------------------ writing
    def append(self, kind: int, payload: object, sync: bool = True) -> int:
        """Append one record; returns its segment. With ``durable``, on storage when it returns."""
        body = cbor2.dumps(payload)
        size = _align(_HEADER.size + len(body)) if self.direct else 0
        if (self._fd is None or self._offset >= SEGMENT_BYTES
                or (self._offset > 0 and self._offset + size > SEGMENT_BYTES)):
            self._open_next()  # a direct-I/O record never spans segments
        if self._needs_header and self.header is not None:
            head_kind, head = self.header()
            self._needs_header = False
            try:
                self.append(head_kind, head, sync=False)
            except OSError:
                self._needs_header = True
                raise
        assert self._fd is not None
        if self.direct:
            kind |= PADDED
        record = _HEADER.pack(len(body), _crc(self.active, kind, body), kind) + body
        start = self._offset
        try:
            if self.direct:
                self._write_direct(record, sync)
            else:
                self._write_buffered(record)
                if self.durable and sync:
                    os.fdatasync(self._fd)
                    self.synced_offset = self._offset
        except OSError:
            self._offset = start
            if not self.direct:
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, start)
            raise
        self._sizes[self.active] = self._offset
        return self.active

    def _write_buffered(self, record: bytes) -> None:
        assert self._fd is not None
        view = memoryview(record)
        while view:
            written = os.pwrite(self._fd, view, self._offset)
            self._offset += written
            view = view[written:]

    def _write_direct(self, record: bytes, sync: bool) -> None:
        """One record from a fresh sector, padded with zeros to a sector boundary."""
        assert self._fd is not None
        padded = _align(len(record))
        start = self._offset
        if self._dfd is not None:
            buf = self._direct_buffer(padded)
            buf[: len(record)] = record
            buf[len(record) : padded] = bytes(padded - len(record))
            written = os.pwrite(self._dfd, memoryview(buf)[:padded], start)
            if written != padded:
                raise OSError(errno.EIO, "short direct write to the journal")
        else:
            data = record + bytes(padded - len(record))
            view = memoryview(data)
            pos = start
            while view:
                written = os.pwrite(self._fd, view, pos)
                pos += written
                view = view[written:]
        self._offset = start + padded
        if sync:
            os.fdatasync(self._fd)
            self.synced_offset = self._offset

    def _direct_buffer(self, size: int) -> mmap.mmap:
        if self._buffer is None or len(self._buffer) < size:
            self._buffer = mmap.mmap(-1, max(size, DIRECT_BUFFER))  # page-aligned memory
        return self._buffer

    def full(self) -> bool:
        """The active segment has reached its size: the next append starts a new one."""
        return self._offset >= SEGMENT_BYTES

    def sync(self) -> None:
        if self._fd is not None and self.durable and self.synced_offset < self._offset:
            os.fdatasync(self._fd)
            self.synced_offset = self._offset

    def _open_next(self) -> None:
        self._close_fd()
        spares = self._spares() if self.direct else []
        nxt = max([self.active, *self.segments(), *(n for n, _p in spares)], default=0) + 1
        path = self._path(nxt)
        if self.direct:
            self._preallocated(path, [p for _n, p in spares])
            fd = os.open(path, os.O_WRONLY)
            try:
                self._dfd = os.open(path, os.O_WRONLY | os.O_DIRECT)
            except OSError as exc:  # e.g. a file system without direct I/O: pages + fdatasync
                log.info("journal without direct I/O", extra={"event": "journal_buffered",
                                                              "reason": str(exc)})
                self._dfd = None
        else:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            if self.durable:
                fsync_dir(self.dir)
        self._fd, self._offset, self.active, self.synced_offset = fd, 0, nxt, 0
        self._sizes[nxt] = 0
        self._needs_header = True

    def _preallocated(self, path: Path, spares: list[Path]) -> None:
        """A segment-sized file of written blocks: the spare, or a new one filled with zeros."""
        if spares:
            os.replace(spares[0], path)
        else:
            tmp = path.with_name(path.name + ".new")
            try:
                with open(tmp, "wb") as fh:
                    zeros = bytes(1 << 16)
                    for _ in range(SEGMENT_BYTES // len(zeros)):
                        fh.write(zeros)
                    fh.flush()
                    os.fdatasync(fh.fileno())
                    # drop the zero pages from the cache: a later buffered write must not
                    # dirty (and account) a large folio of them
                    os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
                os.replace(tmp, path)
            except OSError:
                tmp.unlink(missing_ok=True)
                raise
        fsync_dir(self.dir)

    def _close_fd(self) -> None:
        for fd in (self._fd, self._dfd):
            if fd is not None:
                os.close(fd)
        self._fd = self._dfd = None

    # ------------------------------------------------------------------ retiring
    def retire(self, segments: list[int]) -> None:
        """Delete segments whose every record is confirmed or in the database (with direct
        I/O, one is kept as the spare for the next segment: no zero-filling again)."""
        for seg in segments:
            if seg == self.active:
                self._close_fd()
                self._offset = 0
            path = self._path(seg)
            if self.direct and not self._spares():
                with contextlib.suppress(OSError):
                    if path.stat().st_size == SEGMENT_BYTES:  # preallocated: worth keeping
                        os.replace(path, self._spare_path(seg))
            path.unlink(missing_ok=True)
            self._sizes.pop(seg, None)

    def close(self) -> None:
        self._close_fd()
