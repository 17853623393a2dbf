"""Gateway spine benchmarks: ingest, drain to Mosquitto, wire size, disk bytes, idle footprint.

Run:  .venv/bin/python bench/bench_spine.py [ingest|drain|wire|footprint|all]

Every figure is printed beside a baseline measured in the same run (this machine is shared
and noisy: compare ratios, not absolute numbers across runs).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.config import BufferSettings, SourceSettings
from edge.contract import encode_batch
from edge.model import Batch, Datastream, Delivery, Observation, Provenance
from edge.outbox import Outbox
from edge.seams import SourceContext, SourceHealth
from edge.sensors.sds011.codec import Sds011Decoder, data_frame
from edge.sources.serial import SerialSource

GW = "gw-bench"


def write_bytes() -> int:
    with open("/proc/self/io") as fh:
        for line in fh:
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    return 0


def bench_ingest(n_frames: int = 200_000) -> dict[str, float]:
    """Decode SDS011 frames (2 observations each) and commit them durably to the outbox."""
    frames = b"".join(data_frame(10 + (i % 500) / 10, 20 + (i % 300) / 10) for i in range(2000))
    chunks = [frames[i : i + 4096] for i in range(0, len(frames), 4096)]
    rounds = n_frames // 2000
    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    # baseline: raw sqlite3, WAL, 500-row transactions, a comparable 6-column row
    db = sqlite3.connect(tmp / "raw.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(
        "CREATE TABLE t(seq INTEGER PRIMARY KEY, ds INT, prov INT, t INT, v REAL, pending INT)"
    )
    rows = [(None, 1, 1, 1_700_000_000_000 + i, 12.3 + i % 100, 1) for i in range(500)]
    n_raw = n_frames * 2
    w0 = write_bytes()
    t0 = time.perf_counter()
    for _ in range(n_raw // 500):
        db.execute("BEGIN")
        db.executemany("INSERT INTO t VALUES(?,?,?,?,?,?)", rows)
        db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    raw_s = time.perf_counter() - t0
    raw_bytes = (write_bytes() - w0) / n_raw
    db.close()
    # ours: decode + observations + group commit (500 rows) through the real classes, with the
    # gateway process' GC settings (edge.runtime.tune_gc)
    from edge.runtime import tune_gc

    tune_gc()
    box = Outbox(tmp / "outbox.db", BufferSettings(commit_rows=500), GW)
    src = SerialSource(SourceSettings(name="sds", type="sds011", port="/dev/null"), GW)
    ctx = SourceContext(GW, box.append, SourceHealth("sds"))
    decoder = Sds011Decoder()
    w0 = write_bytes()
    t0 = time.perf_counter()
    for _ in range(rounds):
        for chunk in chunks:
            box.append(src._observations(ctx, decoder.feed(chunk)))
    box.commit()
    box._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    ours_s = time.perf_counter() - t0
    n_obs = box.counters.received
    ours_bytes = (write_bytes() - w0) / n_obs
    # draining deletes rows: count those writes too (the full life of an observation on disk)
    w1 = write_bytes()
    while batch := box.next_batch("default", 5000):
        box.settle("default", Delivery(confirmed=batch.sequences))
    box._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    delete_bytes = (write_bytes() - w1) / n_obs
    box.close()
    shutil.rmtree(tmp)
    out = {
        "raw_sqlite_rows_per_s": n_raw / raw_s,
        "raw_sqlite_bytes_per_row": raw_bytes,
        "ingest_obs_per_s": n_obs / ours_s,
        "ingest_bytes_per_obs": ours_bytes,
        "drain_delete_bytes_per_obs": delete_bytes,
        "lifetime_bytes_per_obs": ours_bytes + delete_bytes,
        "ratio_vs_raw_sqlite": (n_obs / ours_s) / (n_raw / raw_s),
    }
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _mosquitto(tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    conf = tmp / "m.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_inflight_messages 0\n"
        "max_queued_messages 0\nlog_dest none\n"
    )
    proc = subprocess.Popen([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(conf)])
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("mosquitto did not start")


def bench_paho_baseline(port: int, n: int = 50_000) -> float:
    """paho-mqtt publishing n small QoS 1 messages (its default in-flight window), all PUBACKed."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-paho")
    done = threading.Event()
    acked = [0]

    def on_publish(*_a: object) -> None:
        acked[0] += 1
        if acked[0] == n:
            done.set()

    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    client.loop_start()
    payload = b"x" * 16
    t0 = time.perf_counter()
    for _ in range(n):
        client.publish("bench/raw", payload, qos=1)
    done.wait(120)
    elapsed = time.perf_counter() - t0
    client.loop_stop()
    client.disconnect()
    return n / elapsed


def bench_drain(n_obs: int = 1_000_000) -> dict[str, float]:
    """A backlog of n_obs committed observations published to Mosquitto (QoS 1), confirmed, deleted."""
    from edge.seams import UplinkHealth
    from edge.uplinks import OutboxPort
    from edge.uplinks.mqtt import MqttUplink
    from edge.uplinks.mqtt_settings import MqttSettings

    tmp = Path(tempfile.mkdtemp(prefix="bench-drain-"))
    broker, port = _mosquitto(tmp)
    try:
        paho_rate = bench_paho_baseline(port)
        box = Outbox(tmp / "outbox.db", BufferSettings(commit_rows=50_000), GW)
        streams = [Datastream(GW, f"s{i}", q) for i in range(10) for q in ("pm2_5", "pm10")]
        prov = Provenance("SDS011")
        t = 1_700_000_000_000
        for i in range(0, n_obs, 50_000):
            box.append(
                Observation(streams[j % 20], 10 + (j % 900) / 10, t + j * 50, prov)
                for j in range(i, i + 50_000)
            )
        box.commit()
        settings = MqttSettings(port=port, batch_size=5000, max_inflight=16)
        uplink = MqttUplink(settings, GW)
        health = UplinkHealth("mqtt")

        async def run() -> float:
            event = asyncio.Event()
            p = OutboxPort("default", box, event, health)
            task = asyncio.create_task(uplink.run(p))
            t0 = time.perf_counter()
            while box.depth() > 0:
                await asyncio.sleep(0.01)
                if task.done():
                    task.result()
            elapsed = time.perf_counter() - t0
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return elapsed

        elapsed = asyncio.run(run())
        box.close()
        return {
            "paho_raw_qos1_msgs_per_s": paho_rate,
            "drain_seconds_for_backlog": elapsed,
            "backlog": n_obs,
            "drain_obs_per_s": n_obs / elapsed,
            "bytes_on_wire_per_obs": health.bytes_sent / n_obs,
            "messages": health.sent_batches,
        }
    finally:
        broker.terminate()
        broker.wait(5)
        shutil.rmtree(tmp, ignore_errors=True)


def bench_wire(n: int = 5000) -> dict[str, float]:
    """Bytes per observation: compact CBOR batch vs SensorThings JSON (one Observation each)."""
    from edge.sensorthings import observation_body

    streams = [Datastream(GW, "sds", "pm2_5"), Datastream(GW, "sds", "pm10")]
    prov = Provenance("SDS011", "58D9")
    obs = tuple(
        Observation(
            streams[i % 2],
            10 + (i % 400) / 10,
            1_700_000_000_000 + (i // 2) * 1000,
            prov,
            sequence=i + 1,
        )
        for i in range(n)
    )
    compact = len(encode_batch(Batch(GW, obs)))
    sta = sum(len(json.dumps(observation_body(o, GW, 12), separators=(",", ":"))) for o in obs)
    return {
        "compact_bytes_per_obs": compact / n,
        "sensorthings_json_bytes_per_obs": sta / n,
        "ratio": (sta / n) / (compact / n),
    }


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def bench_footprint(seconds: float = 60.0, n_sources: int = 10) -> dict[str, float]:
    """RSS and CPU of a real gateway process reading n emulated sensors at 1 Hz to Mosquitto."""
    from edge.sensors.sds011.emulator import Sds011Emulator

    tmp = Path(tempfile.mkdtemp(prefix="bench-footprint-"))
    broker, port = _mosquitto(tmp)
    emus = [
        Sds011Emulator(link_path=tmp / f"tty{i}", interval_s=1.0, seed=i).start()
        for i in range(n_sources)
    ]
    lines = [
        "[gateway]",
        'id = "gw-bench"',
        f'data_dir = "{tmp / "data"}"',
        "",
        "[uplinks.mqtt]",
        f"port = {port}",
        "",
        "[log]",
        'level = "WARNING"',
        "",
    ]
    for i, emu in enumerate(emus):
        lines += ["[[sources]]", f'name = "sds{i}"', 'type = "sds011"', f'port = "{emu.port}"', ""]
    cfg = tmp / "gw.toml"
    cfg.write_text("\n".join(lines))
    proc = subprocess.Popen(
        [sys.executable, "-c", "from edge.cli import main; main()", "run", str(cfg)]
    )
    try:
        time.sleep(5)  # start-up
        cpu0 = _cpu_seconds(proc.pid)
        t0 = time.monotonic()
        time.sleep(seconds)
        cpu = (_cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0) * 100
        peak = _status_kib(proc.pid, "VmHWM") * 1024
        # baseline: an idle python interpreter that imported the same runtime modules
        base = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import edge.runtime, edge.uplinks.mqtt, edge.sources.serial, time; time.sleep(3)",
            ]
        )
        time.sleep(2)
        base_rss = _status_kib(base.pid, "VmRSS") * 1024
        base.wait()
        return {
            "sources": n_sources,
            "peak_rss_mb": peak / 2**20,
            "cpu_percent_of_one_core": cpu,
            "baseline_idle_import_rss_mb": base_rss / 2**20,
        }
    finally:
        proc.terminate()
        proc.wait(15)
        for emu in emus:
            emu.stop()
        broker.terminate()
        broker.wait(5)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    which = sys.argv[1] if len(sys.argv) > 1 else "all"
    runs = {
        "ingest": bench_ingest,
        "wire": bench_wire,
        "drain": bench_drain,
        "footprint": bench_footprint,
    }
    for name, fn in runs.items():
        if which in (name, "all"):
            result = fn()
            print(f"== {name}")
            for key, value in result.items():
                print(
                    f"  {key:36s} {value:,.2f}"
                    if isinstance(value, float)
                    else f"  {key:36s} {value:,}"
                )
            sys.stdout.flush()


if __name__ == "__main__":
    main()
