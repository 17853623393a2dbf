# Node side of the serial protocol: hello, time sync, config, and reliable batch delivery.
#
# Batches wait in a bounded ring until the gateway acknowledges them (cumulative ack); they
# are resent, oldest first, after a reconnect (a hello answered) or an ack timeout. Batches
# with a wall-clock time are persisted to flash so they survive a reboot or deep sleep.
# The sequence counter is persisted in blocks of SEQ_BLOCK so that a reboot never reuses a
# sequence number (it may skip some: the gateway counts that as a gap, not a loss). The boot
# counter (hello field ``boot``) is incremented once per boot. Every file is written
# atomically with a CRC (flashstore.py): a reset during a write keeps the old or the new copy.
import struct

import flashstore
import nodecfg
import nodeproto as P

RING_FILE = "ring.bin"
SEQ_FILE = "seq.bin"
BOOT_FILE = "boot.bin"
SEQ_BLOCK = 16
HELLO_RETRY_MS = 2000
MAX_SILENT_RESENDS = 3
MAX_PENDING_LOGS = 4
RING_MAGIC = b"DR1"
_ENTRY = ">IBqH"  # seq, has wall-clock time, time (epoch ms or uptime ms), records length


class Link:
    def __init__(self, uart, node_id, firmware, kind, inventory, cfg, boot=0):
        self.uart = uart
        self.node_id = node_id
        self.firmware = firmware
        self.kind = kind
        self.inventory = inventory  # [[name, model, [quantity codes]], ...]
        self.cfg = cfg
        self.boot = boot
        self.rxbuf = bytearray(128)
        self.reader = P.FrameReader()
        self.ring = []  # [seq, has_epoch, time_ms, records CBOR bytes]
        self.offset = None  # epoch ms - uptime ms, once the gateway sent the time
        self.hello_at = None
        self.connected = False
        self.last_send = None
        self.silent = 0
        self.pending_logs = []
        self.on_config = None  # callback(cfg) after an accepted CFG update
        self.stats = {"rx_bad": 0, "resends": 0, "dropped": 0, "acks": 0, "sent": 0}
        self.next_seq = 1
        self.seq_limit = 1
        self._load()

    # ---- persistence
    def _load(self):
        self.seq_limit = read_counter(SEQ_FILE) or 1
        if self.cfg["persist_ring"]:
            self.ring = read_ring(RING_FILE)
        top = self.seq_limit
        for e in self.ring:
            if e[0] >= top:
                top = e[0] + 1
        self.next_seq = top
        self._reserve()

    def _reserve(self):
        # A battery node reboots at every wake-up: reserving a block each time would skip
        # numbers on every cycle, so it writes the exact counter (one small write per batch).
        self.seq_limit = self.next_seq + (0 if self.cfg["battery"] else SEQ_BLOCK)
        write_counter(SEQ_FILE, self.seq_limit)

    def _persist(self):
        if self.cfg["persist_ring"]:
            write_ring(RING_FILE, self.ring)

    # ---- sending
    def _send(self, msg):
        self.uart.write(P.encode_message(msg))

    def send_hello(self, now):
        self._send({
            "type": "hello",
            "node_id": self.node_id,
            "firmware": self.firmware,
            "protocol": [P.MAJOR, P.MINOR],
            "kind": self.kind,
            "sensors": self.inventory,
            "oldest": self.ring[0][0] if self.ring else self.next_seq,
            "next_seq": self.next_seq,
            "boot": self.boot,
        })
        self.hello_at = now

    def log(self, level, code, text):
        """Send a log frame now, or once connected (at most MAX_PENDING_LOGS are kept)."""
        msg = {"type": "log", "level": level, "code": code, "text": text[:120]}
        if self.connected:
            self._send(msg)
        elif len(self.pending_logs) < MAX_PENDING_LOGS:
            self.pending_logs.append(msg)

    def _batch_frame(self, entry, now):
        body = {1: entry[0], 4: P.RawCBOR(entry[3]), 5: self.ring[0][0]}
        if entry[1]:
            body[2] = entry[2]
        else:
            body[3] = now - entry[2] if now > entry[2] else 0
        return P.build_frame(P.BATCH, body)

    def _send_window(self, now):
        for e in self.ring:
            self.uart.write(self._batch_frame(e, now))
            self.stats["sent"] += 1
        self.last_send = now

    def queue(self, records, start_uptime, now):
        """Add one batch (records: list of [idx, code, value, dt_ms, dur_ms]); send if connected."""
        seq = self.next_seq
        self.next_seq += 1
        if self.next_seq >= self.seq_limit:
            self._reserve()
        if self.offset is not None:
            entry = [seq, 1, start_uptime + self.offset, P.cbor_dumps(records)]
        else:
            entry = [seq, 0, start_uptime, P.cbor_dumps(records)]
        self.ring.append(entry)
        if len(self.ring) > self.cfg["ring_size"]:
            self.ring.pop(0)
            self.stats["dropped"] += 1
        self._persist()
        if self.connected:
            self.uart.write(self._batch_frame(entry, now))
            self.stats["sent"] += 1
            if self.last_send is None:
                self.last_send = now
        return seq

    # ---- receiving
    def poll(self, now):
        """Read what the gateway sent and act on it; then retry hello / resend on timeout."""
        uart = self.uart
        while uart.any():
            n = uart.readinto(self.rxbuf)
            if not n:
                break
            for block in self.reader.feed(memoryview(self.rxbuf)[:n]):
                try:
                    msg = P.decode_message(block)
                except P.ProtocolError:
                    self.stats["rx_bad"] += 1
                    continue
                self._handle(msg, now)
        self.service(now)

    def service(self, now):
        if not self.connected:
            if self.hello_at is None or now - self.hello_at >= HELLO_RETRY_MS:
                self.send_hello(now)
        elif self.ring and (self.last_send is None
                            or now - self.last_send >= self.cfg["ack_timeout_s"] * 1000):
            if self.last_send is not None:
                self.stats["resends"] += 1
                self.silent += 1
                if self.silent > MAX_SILENT_RESENDS:  # gateway gone: start over with a hello
                    self.connected = False
                    self.silent = 0
                    self.send_hello(now)
                    return
            self._send_window(now)

    def _handle(self, msg, now):
        t = msg["type"]
        if t == "ack":
            self._ack(msg["seq"], now)
        elif t == "time":
            self._time(msg["epoch_ms"], now)
        elif t == "sync":
            self.connected = False
            self.send_hello(now)
        elif t == "cfg_get":
            self._send({"type": "cfg", "config": self.cfg})
        elif t == "cfg":
            update = msg["config"]
            err = nodecfg.check_update(update)
            if err:
                self.log("error", "config", err)
                return
            for k in update:
                self.cfg[k] = update[k]
            nodecfg.save(self.cfg)
            if self.on_config:
                self.on_config(self.cfg)
            self._send({"type": "cfg", "config": self.cfg})

    def _ack(self, seq, now):
        self.stats["acks"] += 1
        self.silent = 0
        first_contact = not self.connected
        self.connected = True
        if seq >= self.next_seq:
            # The gateway has more than this node ever sent: our counter was reset (flash
            # wiped). Renumber what is pending after the gateway's mark.
            self.next_seq = seq + 1
            for e in self.ring:
                e[0] = self.next_seq
                self.next_seq += 1
            self._reserve()
            self._persist()
        else:
            before = len(self.ring)
            while self.ring and self.ring[0][0] <= seq:
                self.ring.pop(0)
            if len(self.ring) != before:
                self._persist()
        if first_contact:
            for msg in self.pending_logs:
                self._send(msg)
            self.pending_logs = []
            self.last_send = None  # (re)send everything pending now
            if self.ring:
                self._send_window(now)
        else:
            self.last_send = now if self.ring else None

    def _time(self, epoch_ms, now):
        self.offset = epoch_ms - now
        changed = False
        for e in self.ring:
            if not e[1]:
                e[1] = 1
                e[2] = e[2] + self.offset
                changed = True
        if changed:
            self._persist()


def write_ring(name, ring):
    """Store the batches that have a wall-clock time (the others mean nothing after a reboot)."""
    out = bytearray(RING_MAGIC)
    for e in ring:
        if e[1]:
            out.extend(struct.pack(_ENTRY, e[0], e[1], e[2], len(e[3])))
            out.extend(e[3])
    flashstore.write_sealed(name, out)


def read_ring(name):
    """The stored ring: the newest intact copy (see flashstore), or [] when there is none."""
    ring = flashstore.read_sealed(name, _parse_ring, _parse_legacy_ring)
    return ring if ring is not None else []


def _parse_ring(data, torn_ok=False):
    """Entries of a ring payload; None if it is not exactly a ring (unless ``torn_ok``)."""
    if data[:3] != RING_MAGIC:
        return None
    ring = []
    pos = 3
    size = struct.calcsize(_ENTRY)
    while pos + size <= len(data):
        seq, flag, t, n = struct.unpack(_ENTRY, data[pos : pos + size])
        pos += size
        if pos + n > len(data):
            break
        ring.append([seq, flag, t, bytes(data[pos : pos + n])])
        pos += n
    if pos != len(data) and not torn_ok:
        return None
    return ring


def _parse_legacy_ring(data):
    # firmware 1.0.0 wrote ring.bin in place without a seal: keep what is complete
    return _parse_ring(data, True)


def write_counter(name, value):
    flashstore.write_sealed(name, struct.pack(">I", value))


def read_counter(name):
    """A stored counter (0 when none was ever stored)."""
    value = flashstore.read_sealed(name, _parse_counter, _parse_legacy_counter)
    return value if value is not None else 0


def _parse_counter(data):
    return struct.unpack(">I", data)[0] if len(data) == 4 else None


def _parse_legacy_counter(data):
    return _parse_counter(data)  # firmware 1.0.0: the 4 bytes alone


def count_boot():
    """This boot's number (1, 2, …), stored before it is returned: it never repeats."""
    boot = read_counter(BOOT_FILE) + 1
    write_counter(BOOT_FILE, boot)
    return boot
