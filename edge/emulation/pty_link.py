"""A pseudo-terminal pair that stands in for a USB-serial adapter.

The emulator owns the master side; the gateway opens the slave path (``/dev/pts/N``) exactly as it
would open ``/dev/ttyUSB0`` with pyserial. The link mimics a real adapter:

- bytes written while no program has the port open are lost (the kernel discards them when the
  last slave descriptor closes; emulators do not even write them, see ``client_connected``);
- :meth:`PtyLink.unplug` closes the master, so a reader blocked on the slave gets an error/EOF,
  and the stable symlink (``link_path``, like ``/dev/serial/by-id/...``) disappears;
- :meth:`PtyLink.replug` creates a fresh pair, possibly under another ``/dev/pts/N``, and points
  the symlink at it again.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import tty
from pathlib import Path


class PtyLink:
    """Master side of a raw pseudo-terminal, with an optional stable symlink to the slave."""

    def __init__(self, link_path: str | os.PathLike[str] | None = None) -> None:
        self.link_path = Path(link_path) if link_path is not None else None
        self._master: int | None = None
        self._path: str | None = None
        self._pending = b""  # client bytes read by client_connected(), returned by take()

    # --- lifetime -------------------------------------------------------------------------

    def open(self) -> str:
        """Create a new pty pair (raw mode) and return the slave path."""
        if self._master is not None:
            raise RuntimeError(f"pty link already open at {self._path}")
        master, slave = os.openpty()
        try:
            tty.setraw(slave)  # no echo, no CR/LF translation, no signals: a plain byte pipe
            path = os.ttyname(slave)
        finally:
            # Close our slave fd: while no client has the port open the kernel drops what we
            # write, like a real adapter, and a read on the master reports EIO ("no client").
            os.close(slave)
        flags = fcntl.fcntl(master, fcntl.F_GETFL)
        fcntl.fcntl(master, fcntl.F_SETFL, flags | os.O_NONBLOCK)
        self._master, self._path = master, path
        self._update_link()
        return path

    def close(self) -> None:
        """Close the master (the client sees an error/EOF) and remove the symlink."""
        master, self._master = self._master, None
        self._pending = b""
        if master is not None:
            os.close(master)
        if self.link_path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.link_path.unlink()

    unplug = close

    def replug(self) -> str:
        """Close (if open) and open a fresh pty; return its (possibly different) path."""
        self.close()
        return self.open()

    @property
    def is_open(self) -> bool:
        return self._master is not None

    @property
    def path(self) -> str:
        """The slave path of the current pair (``/dev/pts/N``)."""
        if self._path is None:
            raise RuntimeError("pty link was never opened")
        return self._path

    @property
    def fileno(self) -> int | None:
        return self._master

    def _update_link(self) -> None:
        if self.link_path is None or self._path is None:
            return
        tmp = self.link_path.with_name(f".{self.link_path.name}.{os.getpid()}.tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.symlink(self._path, tmp)
        os.replace(tmp, self.link_path)  # atomic: readers never see a missing link mid-update

    # --- I/O ----------------------------------------------------------------------------------

    def read(self, size: int = 4096) -> bytes | None:
        """Bytes the client wrote (``b""`` if none yet); ``None`` if no client has the port open."""
        if self._master is None:
            return None
        try:
            return os.read(self._master, size)
        except BlockingIOError:
            return b""
        except OSError as exc:
            if exc.errno == errno.EIO:
                return None
            raise

    def client_connected(self) -> bool:
        """True if some program has the slave open (a master read would not report EIO).

        Any bytes the client had written are kept for the next :meth:`read`.
        """
        data = self.read()
        if data is None:
            return False
        if data:
            self._pending += data
        return True

    def take(self) -> bytes | None:
        """Like :meth:`read` but first returns bytes buffered by :meth:`client_connected`."""
        pending, self._pending = self._pending, b""
        data = self.read()
        if data is None:
            return pending or None
        return pending + data

    def write(self, data: bytes) -> int:
        """Write to the client; returns bytes accepted (0 if closed or the client is not reading).

        Never blocks: a full pty buffer drops the bytes, as a UART without flow control would.
        """
        if self._master is None or not data:
            return 0
        try:
            return os.write(self._master, data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            if exc.errno == errno.EIO:
                return 0
            raise

    def wait_readable(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for client bytes (returns at once if no client is attached)."""
        master = self._master
        if master is None:
            return False
        try:
            ready, _, _ = select.select([master], [], [], max(0.0, timeout))
        except (OSError, ValueError):  # closed by unplug() in another thread meanwhile
            return False
        return bool(ready)

    def __enter__(self) -> PtyLink:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
