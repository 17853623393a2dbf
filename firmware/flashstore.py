# Atomic, verified files on the node's flash (the ring, the config, the counters).
#
# A file is never rewritten in place. ``write`` puts the new content in NAME.tmp, flushes and
# syncs it, moves the current NAME to NAME.bak and renames NAME.tmp to NAME (a rename is
# atomic on LittleFS, the ESP32's file system). A reset at any point therefore leaves at least
# one complete copy: NAME (old or new), NAME.tmp (the complete new one, if the reset came
# between the two renames) or NAME.bak (the previous one). ``read`` checks each copy in that
# order and returns the first one its ``check`` accepts, so a torn or corrupt copy is never
# used. ``seal``/``unseal`` give binary files a header with their length and a CRC-32.
#
# A NAME.tmp is always the newest write attempt (every write starts by truncating it), so
# preferring it to NAME.bak never goes back in time. All file access goes through ``hw`` so
# that tests can cut the power after any byte or operation (hil/mp/powercut.py).
import struct
from binascii import crc32

import hw

TMP = ".tmp"
BAK = ".bak"
SEAL_MAGIC = b"DS\x01"  # "duet sealed", format 1
_HEAD = ">3sI"  # magic, payload length; a big-endian CRC-32 of head + payload follows
_HEAD_SIZE = struct.calcsize(_HEAD)


def seal(payload):
    """``payload`` framed with its length and a CRC-32, as ``write`` stores binary files."""
    out = bytearray(struct.pack(_HEAD, SEAL_MAGIC, len(payload)))
    out.extend(payload)
    out.extend(struct.pack(">I", crc32(out) & 0xFFFFFFFF))
    return bytes(out)


def unseal(data):
    """The payload of a sealed file, or None when it is torn, truncated or corrupt."""
    if len(data) < _HEAD_SIZE + 4:
        return None
    magic, n = struct.unpack(_HEAD, data[:_HEAD_SIZE])
    end = _HEAD_SIZE + n
    if magic != SEAL_MAGIC or len(data) != end + 4:
        return None
    if struct.unpack(">I", data[end:])[0] != crc32(data[:end]) & 0xFFFFFFFF:
        return None
    return bytes(data[_HEAD_SIZE:end])


def write(name, data):
    """Replace the file ``name`` by ``data`` so that a reset keeps the old or the new copy."""
    path = hw.path(name)
    f = hw.file_open(path + TMP, "wb")
    try:
        f.write(data)
        f.flush()
    finally:
        f.close()
    hw.fs_sync()
    try:  # noqa: SIM105 (MicroPython has no contextlib)
        hw.file_rename(path, path + BAK)
    except OSError:  # the first write: there is no current copy yet
        pass
    hw.file_rename(path + TMP, path)
    hw.fs_sync()


def read(name, check, legacy=None):
    """``check(bytes)`` of the first good copy of ``name`` (None: no good copy).

    ``check`` returns the decoded value, or None for a copy it refuses. ``legacy`` decodes
    the current file written in place by older firmware (tried after ``check`` on NAME only).
    """
    path = hw.path(name)
    for candidate in (path, path + TMP, path + BAK):
        data = _read_all(candidate)
        if data is None:
            continue
        value = check(data)
        if value is None and legacy is not None and candidate == path:
            value = legacy(data)
        if value is not None:
            return value
    return None


def write_sealed(name, payload):
    write(name, seal(payload))


def read_sealed(name, parse, legacy=None):
    """``parse(payload)`` of the first copy whose seal is intact and that ``parse`` accepts."""

    def check(data):
        payload = unseal(data)
        return None if payload is None else parse(payload)

    return read(name, check, legacy)


def _read_all(path):
    try:
        f = hw.file_open(path, "rb")
    except OSError:
        return None
    try:
        return f.read()
    except OSError:
        return None
    finally:
        f.close()
