"""Gateway spine benchmarks: ingest, drain to Mosquitto, wire size, disk bytes, idle footprint.

Run:  .venv/bin/python bench/bench_spine.py [ingest|drain|wire|footprint|all] [seconds]

``seconds``: how long the real-load part of ``wire`` counts (default 300).

``ingest`` also measures the previous design: the source of git revision ``$BASELINE_REV``
(default: the commit this branch left main at) unpacked with ``git archive`` and run in its
own process.

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
import tarfile
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if len(sys.argv) > 2 and sys.argv[1] == "ingest-child":  # run from another source tree
    sys.path.insert(0, sys.argv[2])
else:
    sys.path.insert(0, str(ROOT))

from edge.config import BufferSettings, SourceSettings  # noqa: E402
from edge.contract import encode_batch  # noqa: E402
from edge.model import Batch, Datastream, Delivery, Observation, Provenance  # noqa: E402
from edge.outbox import Outbox  # noqa: E402
from edge.seams import SourceContext, SourceHealth  # noqa: E402
from edge.sensors.sds011.codec import Sds011Decoder, data_frame  # noqa: E402
from edge.sources.serial import SerialSource  # noqa: E402

GW = "gw-bench"


def write_bytes() -> int:
    with open("/proc/self/io") as fh:
        for line in fh:
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    return 0


def ingest_once(durability: str, n_frames: int = 200_000) -> dict[str, float]:
    """Decode SDS011 frames (2 observations each), commit them to an outbox, drain, close.

    Uses only the outbox's public API, so the same function measures the previous design
    (``ingest-child`` below runs it from another source tree).
    """
    from edge.runtime import tune_gc

    tune_gc()  # the gateway process' GC settings
    frames = b"".join(data_frame(10 + (i % 500) / 10, 20 + (i % 300) / 10) for i in range(2000))
    chunks = [frames[i : i + 4096] for i in range(0, len(frames), 4096)]
    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    box = Outbox(tmp / "outbox.db", BufferSettings(commit_rows=500, durability=durability), GW)
    src = SerialSource(SourceSettings(name="sds", type="sds011", port="/dev/null"), GW)
    ctx = SourceContext(GW, box.append, SourceHealth("sds"))
    decoder = Sds011Decoder()
    w0 = write_bytes()
    t0 = time.perf_counter()
    for _ in range(n_frames // 2000):
        for chunk in chunks:
            box.append(src._observations(ctx, decoder.feed(chunk)))
    box.commit()
    ours_s = time.perf_counter() - t0
    n_obs = box.counters.received
    ingest_bytes = (write_bytes() - w0) / n_obs
    # draining deletes what was stored: count those writes too, and the clean close
    w1 = write_bytes()
    while batch := box.next_batch("default", 5000):
        box.settle("default", Delivery(confirmed=batch.sequences))
    box.close()
    drain_bytes = (write_bytes() - w1) / n_obs
    shutil.rmtree(tmp)
    return {
        "obs_per_s": n_obs / ours_s,
        "ingest_bytes_per_obs": ingest_bytes,
        "drain_and_close_bytes_per_obs": drain_bytes,
        "lifetime_bytes_per_obs": ingest_bytes + drain_bytes,
    }


def _raw_sqlite(n_raw: int = 400_000) -> tuple[float, float]:
    """Baseline: raw sqlite3, WAL, 500-row transactions, a comparable 6-column row."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-raw-"))
    db = sqlite3.connect(tmp / "raw.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(
        "CREATE TABLE t(seq INTEGER PRIMARY KEY, ds INT, prov INT, t INT, v REAL, pending INT)"
    )
    rows = [(None, 1, 1, 1_700_000_000_000 + i, 12.3 + i % 100, 1) for i in range(500)]
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
    shutil.rmtree(tmp)
    return n_raw / raw_s, raw_bytes


def previous_rev() -> str:
    """The commit this branch left main at: the previous design."""
    return subprocess.run(["git", "-C", str(ROOT), "merge-base", "HEAD", "main"],
                          capture_output=True, text=True, check=True).stdout.strip()


def _previous_tree(rev: str) -> Path:
    """The previous design's source, unpacked with git archive (no worktree registered)."""
    dest = Path(tempfile.mkdtemp(prefix="bench-previous-"))
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], capture_output=True,
                             check=True).stdout
    (dest / "src.tar").write_bytes(archive)
    with tarfile.open(dest / "src.tar") as tar:
        tar.extractall(dest, filter="data")
    return dest


def _ingest_in(tree: Path, durability: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "ingest-child", str(tree), durability],
        capture_output=True, text=True, check=True,
    ).stdout
    result: dict[str, float] = json.loads(out.splitlines()[-1])
    return result


def bench_ingest() -> dict[str, float]:
    """Ours (this tree) and the previous design (``BASELINE_REV``, default the merge base), each in a
    fresh process, normal and full durability, beside raw SQLite inserts; same run."""
    raw_rate, raw_bytes = _raw_sqlite()
    out: dict[str, float] = {
        "raw_sqlite_rows_per_s": raw_rate,
        "raw_sqlite_bytes_per_row": raw_bytes,
    }
    previous = _previous_tree(os.environ.get("BASELINE_REV") or previous_rev())
    try:
        for durability in ("normal", "full"):
            for code, tree in (("ours", ROOT), ("previous", previous)):
                for key, value in _ingest_in(tree, durability).items():
                    out[f"{code}_{durability}_{key}"] = value
    finally:
        shutil.rmtree(previous, ignore_errors=True)
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


def _backlog(path: Path, n_obs: int) -> Outbox:
    box = Outbox(path, BufferSettings(commit_rows=50_000), GW)
    streams = [Datastream(GW, f"s{i}", q) for i in range(10) for q in ("pm2_5", "pm10")]
    prov = Provenance("SDS011")
    t = 1_700_000_000_000
    for i in range(0, n_obs, 50_000):
        box.append(
            Observation(streams[j % 20], 10 + (j % 900) / 10, t + j * 50, prov)
            for j in range(i, i + 50_000)
        )
    box.commit()
    return box


def _drain(box: Outbox, port: int, confirm: str) -> tuple[float, object]:
    """Seconds until the uplink has every row of ``box`` confirmed (and deleted)."""
    from edge.seams import UplinkHealth
    from edge.uplinks import OutboxPort
    from edge.uplinks.mqtt import MqttUplink
    from edge.uplinks.mqtt_settings import MqttSettings

    settings = MqttSettings(port=port, batch_size=5000, max_inflight=16, confirm=confirm)
    uplink = MqttUplink(settings, GW)
    health = UplinkHealth("mqtt")

    async def run() -> float:
        p = OutboxPort("default", box, asyncio.Event(), health)
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

    return asyncio.run(run()), health


def bench_drain(n_obs: int = 1_000_000) -> dict[str, float]:
    """A backlog of n_obs committed observations published to Mosquitto (QoS 1), confirmed,
    deleted: on the broker's PUBACK (the outbox and uplink alone), then on the acks of a real
    `duet-edge ingest` that stores every row (end to end, the default)."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-drain-"))
    broker, port = _mosquitto(tmp)
    ingest = None
    try:
        paho_rate = bench_paho_baseline(port)
        box = _backlog(tmp / "outbox.db", n_obs)
        elapsed, health = _drain(box, port, "broker")
        box.close()
        ingest = subprocess.Popen(
            [sys.executable, "-c", "from edge.cli import main; main()", "ingest", "--port",
             str(port), "--store", str(tmp / "twin.db"), "--group", ""],
            stderr=subprocess.DEVNULL,
        )
        time.sleep(3)  # subscribed
        box = _backlog(tmp / "outbox-twin.db", n_obs)
        twin_elapsed, _ = _drain(box, port, "twin")
        box.close()
        stored = sqlite3.connect(tmp / "twin.db").execute(
            "SELECT count(*) FROM observation").fetchone()[0]
        return {
            "paho_raw_qos1_msgs_per_s": paho_rate,
            "drain_seconds_for_backlog": elapsed,
            "backlog": n_obs,
            "drain_obs_per_s": n_obs / elapsed,
            "bytes_on_wire_per_obs": health.bytes_sent / n_obs,  # type: ignore[attr-defined]
            "messages": health.sent_batches,  # type: ignore[attr-defined]
            "drain_confirmed_by_twin_seconds": twin_elapsed,
            "drain_confirmed_by_twin_obs_per_s": n_obs / twin_elapsed,
            "twin_stored": stored,
        }
    finally:
        if ingest is not None:
            ingest.terminate()
            ingest.wait(15)
        broker.terminate()
        broker.wait(5)
        shutil.rmtree(tmp, ignore_errors=True)


def bench_wire(n: int = 5000, seconds: float = 300.0) -> dict[str, float]:
    """Bytes of MQTT payload per observation: bulk (one 5000-row message) and at real load."""
    out = bench_wire_bulk(n)
    out.update(bench_wire_real_load(seconds))
    return out


def bench_wire_bulk(n: int = 5000) -> dict[str, float]:
    """One message of n observations: contract v2 and v1 vs SensorThings JSON (one each)."""
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
    v2 = len(encode_batch(Batch(GW, obs)))
    v1 = len(encode_batch(Batch(GW, obs), version=1))
    sta = sum(len(json.dumps(observation_body(o, GW, 12), separators=(",", ":"))) for o in obs)
    return {
        "bulk_v2_bytes_per_obs": v2 / n,
        "bulk_v1_bytes_per_obs": v1 / n,
        "bulk_sensorthings_json_bytes_per_obs": sta / n,
    }


class _WireCounter:
    """A plain MQTT client on the broker counting every payload byte, per gateway and topic."""

    def __init__(self, port: int) -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, str, int, float, list[int]]] = []
        self.counting = False
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="wire-counter")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("duet/v1/#", qos=1)
        self.client.loop_start()

    def _on_message(self, _c: object, _u: object, message: object) -> None:
        import cbor2

        topic = message.topic  # type: ignore[attr-defined]
        payload = message.payload  # type: ignore[attr-defined]
        if not self.counting or message.retain:  # type: ignore[attr-defined]
            return
        _, _, gw, kind = topic.split("/", 3)
        times: list[int] = []
        if kind == "obs":
            batch = cbor2.loads(payload)
            t = batch["t0"]
            for delta in batch["dt"]:
                t += delta
                times.append(t)
        self.messages.append((gw, kind.split("/")[0], len(payload), time.time(), times))

    def figures(self, gw: str, label: str, seconds: float) -> dict[str, float]:
        mine = [m for m in self.messages if m[0] == gw]
        obs = [m for m in mine if m[1] == "obs"]
        n = sum(len(m[4]) for m in obs)
        lat = sorted(m[3] - t / 1000 for m in obs for t in m[4])
        by_kind: dict[str, int] = {}
        for m in mine:
            by_kind[m[1]] = by_kind.get(m[1], 0) + m[2]
        out = {
            f"{label}_obs_per_s": n / seconds,
            f"{label}_messages_per_s": len(obs) / seconds,
            f"{label}_obs_payload_bytes_per_obs": by_kind.get("obs", 0) / max(n, 1),
            f"{label}_all_topics_bytes_per_obs": sum(by_kind.values()) / max(n, 1),
            f"{label}_latency_p50_s": lat[len(lat) // 2] if lat else float("nan"),
            f"{label}_latency_max_s": lat[-1] if lat else float("nan"),
        }
        if "ack" in by_kind:
            out[f"{label}_ack_bytes_per_obs"] = by_kind["ack"] / max(n, 1)
        return out

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _real_load_gateway(tmp: Path, port: int, gw: str, mqtt_extra: str, n_sources: int
                       ) -> tuple[subprocess.Popen[bytes], list[object]]:
    """`duet-edge run` reading n emulated SDS011 at 1 Hz, quality stage on, 1 s commits."""
    from edge.sensors.sds011.emulator import Sds011Emulator

    emus = [
        Sds011Emulator(link_path=tmp / f"{gw}-tty{i}", interval_s=1.0, seed=i).start()
        for i in range(n_sources)
    ]
    lines = [
        "[gateway]", f'id = "{gw}"', f'data_dir = "{tmp / gw}"', "",
        "[buffer]", "commit_interval_s = 1.0", "",
        "[uplinks.mqtt]", f"port = {port}", mqtt_extra, "",
        "[quality]", "",
        "[log]", 'level = "WARNING"', "",
    ]
    for i, emu in enumerate(emus):
        lines += ["[[sources]]", f'name = "sds{i}"', 'type = "sds011"', f'port = "{emu.port}"',
                  "options = { warmup_s = 0 }", ""]
    cfg = tmp / f"{gw}.toml"
    cfg.write_text("\n".join(lines))
    proc = subprocess.Popen(
        [sys.executable, "-c", "from edge.cli import main; main()", "run", str(cfg)]
    )
    return proc, emus


def bench_wire_real_load(seconds: float = 300.0, n_sources: int = 10) -> dict[str, float]:
    """Two real gateways side by side, 10 SDS011 at 1 Hz each (20 obs/s), quality on:
    contract v2 (confirm = twin, default window) beside contract v1 (PUBACK, no window),
    with a real `duet-edge ingest`; payload bytes counted on the broker side."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-wire-"))
    broker, port = _mosquitto(tmp)
    ingest = subprocess.Popen(
        [sys.executable, "-c", "from edge.cli import main; main()", "ingest", "--port",
         str(port), "--store", str(tmp / "twin.db")],
        stderr=subprocess.DEVNULL,
    )
    counter = _WireCounter(port)
    runs = [
        _real_load_gateway(tmp, port, "gw-v2", "", n_sources),
        _real_load_gateway(tmp, port, "gw-v1",
                           'contract = 1\nconfirm = "broker"\nmax_latency_s = 0', n_sources),
    ]
    try:
        time.sleep(15)  # start-up, first connection (the v2 dictionary goes out here)
        counter.counting = True
        t0 = time.monotonic()
        time.sleep(seconds)
        counter.counting = False
        elapsed = time.monotonic() - t0
        out: dict[str, float] = {"real_load_seconds": elapsed}
        out.update(counter.figures("gw-v2", "real_v2", elapsed))
        out.update(counter.figures("gw-v1", "real_v1", elapsed))
        out["real_ratio_v1_over_v2_obs_payload"] = (
            out["real_v1_obs_payload_bytes_per_obs"] / out["real_v2_obs_payload_bytes_per_obs"])
        out["real_v2_added_latency_p50_s"] = (
            out["real_v2_latency_p50_s"] - out["real_v1_latency_p50_s"])
        out["real_v2_added_latency_max_s"] = (
            out["real_v2_latency_max_s"] - out["real_v1_latency_max_s"])
        return out
    finally:
        counter.close()
        for proc, emus in runs:
            proc.terminate()
            proc.wait(15)
            for emu in emus:
                emu.stop()  # type: ignore[attr-defined]
        ingest.terminate()
        ingest.wait(15)
        broker.terminate()
        broker.wait(5)
        shutil.rmtree(tmp, ignore_errors=True)


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
    if which == "ingest-child":
        print(json.dumps(ingest_once(sys.argv[3])))
        return
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 300.0
    runs = {
        "ingest": bench_ingest,
        "wire": lambda: bench_wire(seconds=seconds),
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
