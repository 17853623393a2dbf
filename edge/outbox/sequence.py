"""Sequence reservation: the fsynced side file ``<outbox>.seq``, sole owner of numbering.

Sequence numbers are reserved in blocks (``SEQ_RESERVE``) in a small JSON file written
atomically (temporary file, fsync, rename, fsync of the directory), so a number handed out is
always below a reserved mark that no crash, power cut or WAL loss can take back. The file also
carries the **clean-shutdown marker**: :meth:`SeqFile.begin` clears it (fsynced) before
any number is handed out and :meth:`SeqFile.mark_clean` writes "clean at X" last thing on a
clean close. At the next open:

* clean, and X equals the highest number the stored data knows: numbering continues at X+1;
* otherwise (``kill -9``, power cut, a truncated or deleted WAL, a database moved aside):
  numbering jumps to the end of the reserved block + 1, and the caller records gaps for the
  numbers that may have been handed out and lost (``restart:unclean``): every number up to
  there it neither holds nor knows confirmed.

So a number is never handed out twice, whatever was rolled back. ``epoch`` counts opens
(diagnostics); ``low`` is a lower bound of every number that may still be unsent, used to
announce a moved-aside database's possible backlog.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

SEQ_RESERVE = 1_000_000  # numbers reserved per write of the side file


@dataclass(slots=True)
class SeqRecord:
    reserved: int = 0  # every number <= reserved may have been handed out
    clean: int | None = None  # "clean at X": the last number handed out before a clean close
    low: int = 1  # no unsent observation has a lower number
    epoch: int = 0  # opens so far


@dataclass(frozen=True, slots=True)
class Resume:
    """Where numbering continues after an open, and what may have been lost before it."""

    next_seq: int  # after an unclean stop: the end of the reserved block + 1
    clean: bool
    low: int
    epoch: int


class SeqFile:
    """The ``<outbox>.seq`` side file. ``OSError`` from a write means: no new numbers now."""

    def __init__(self, outbox_path: Path) -> None:
        self.path = Path(str(outbox_path) + ".seq")
        self.record = self._read()
        self.next_seq = 1

    def _read(self) -> SeqRecord:
        try:
            text = self.path.read_text().strip()
        except OSError:
            return SeqRecord()
        if not text:
            return SeqRecord()
        try:
            if text.isdigit():  # format of versions before the clean marker: a bare mark
                return SeqRecord(reserved=int(text))
            doc = json.loads(text)
            clean = doc.get("clean")
            return SeqRecord(
                reserved=int(doc.get("reserved", 0)),
                clean=None if clean is None else int(clean),
                low=int(doc.get("low", 1)),
                epoch=int(doc.get("epoch", 0)),
            )
        except (ValueError, TypeError, AttributeError):
            # unreadable: keep no claim of cleanliness; the stored data's maximum still bounds
            return SeqRecord()

    def decide(self, stored_max: int) -> Resume:
        """Where numbering continues, given the highest number the stored data knows of
        (database, journal, dead letters). Writes nothing: :meth:`begin` does."""
        rec = self.record
        clean = rec.clean is not None and rec.clean == stored_max and rec.reserved >= stored_max
        reserved = rec.reserved
        if stored_max and not reserved:
            # the side file is missing or unreadable although numbers were used: a block
            # beyond what is stored may have been handed out and lost
            reserved = stored_max + SEQ_RESERVE
        nxt = stored_max + 1 if clean else max(reserved, stored_max) + 1
        self.next_seq = nxt
        return Resume(nxt, clean, rec.low, rec.epoch + 1)

    def begin(self, resume: Resume) -> None:
        """Clear the clean marker and reserve a block (fsynced) before any number is used.

        Raises ``OSError`` if the side file cannot be written (then no number may be used).
        """
        rec = self.record
        self._write(
            SeqRecord(max(rec.reserved, resume.next_seq - 1 + SEQ_RESERVE), None, rec.low,
                      resume.epoch)
        )

    def reserve(self, upto: int, low: int) -> None:
        """Make sure every number up to ``upto`` is reserved (rewrites the file once a block)."""
        if upto <= self.record.reserved:
            return
        self._write(
            SeqRecord(upto + SEQ_RESERVE, None, low, self.record.epoch)
        )

    def mark_clean(self, last_seq: int, low: int) -> None:
        """Clean close: every number up to ``last_seq`` is accounted for in the stored data."""
        rec = self.record
        self._write(SeqRecord(max(rec.reserved, last_seq), last_seq, low, rec.epoch))

    def _write(self, rec: SeqRecord) -> None:
        doc = {"v": 2, "reserved": rec.reserved, "clean": rec.clean, "low": rec.low,
               "epoch": rec.epoch}
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            with open(tmp, "w") as fh:
                fh.write(json.dumps(doc))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        fsync_dir(self.path.parent)
        self.record = rec


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
