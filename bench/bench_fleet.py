"""Fleet simulator: many gateways publishing compact batches to a local Mosquitto; the twin's
receivers (`duet-edge ingest`) store them. Prints obs/s stored, latency, CPU/RSS of receivers,
broker and PostgreSQL, and bytes written to disk per observation.

Run (from the repository root):

    .venv/bin/python bench/bench_fleet.py steady     # throughput, 10-observation messages
    .venv/bin/python bench/bench_fleet.py latency    # 20,000 gateways × 10 sensors, 1/min
    .venv/bin/python bench/bench_fleet.py burst      # then a 60 s 1 Hz burst from all of them
    .venv/bin/python bench/bench_fleet.py store      # decode + store only (no MQTT): ceiling

``steady`` runs the same messages through each receiver set-up in turn, in the same run:
the receiver of an earlier release (``--baseline-rev``, SQLite, extracted with ``git archive``),
this release with SQLite, with PostgreSQL and one worker, and with two workers. The machine is
shared and noisy: compare the ratios within a run.

Gateways are multiplexed over a few MQTT connections (``--connections``); each has its own id,
topic and sequence numbers. Messages are encoded by :func:`edge.contract.encode_batch` before
the clock starts (``steady``, ``burst``) or as they are due (``latency``, so ``sent`` is real).
PostgreSQL runs with ``fsync = on`` and ``synchronous_commit = on``; SQLite in WAL with
``synchronous = NORMAL`` (the receiver's settings).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
PG_SETTINGS: list[str] = []  # extra postgresql.conf lines (--pg-setting), for experiments
RECEIVER_ARGS: list[str] = []  # extra `duet-edge ingest` options (--receiver-arg)
sys.path.insert(0, str(ROOT))

from edge.contract import SessionEncoder, encode_batch  # noqa: E402
from edge.model import Batch, Datastream, Observation, Provenance, Quality  # noqa: E402
from tests.plugins.postgres import PgServer, _pg_bin_dir  # noqa: E402

SENSORS = [("sds011-1", "pm2_5"), ("sds011-1", "pm10"), ("pms5003-1", "pm1"),
           ("pms5003-1", "pm2_5"), ("pms5003-1", "pm10"), ("bme280-1", "temperature"),
           ("bme280-1", "humidity"), ("bme280-1", "pressure"), ("scd30-1", "co2"),
           ("no2-b43f", "no2")]
PROVENANCE = {"sds011-1": Provenance("SDS011", "A1B2", "1.0", "cal-sds", "3"),
              "pms5003-1": Provenance("PMS5003", "P77", "2.1"),
              "bme280-1": Provenance("BME280", "0x76"),
              "scd30-1": Provenance("SCD30", "S9", "3.66", "cal-co2", "1"),
              "no2-b43f": Provenance("NO2-B43F", "N1", "", "cal-no2", "12")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------------------
# Messages


def gateway_id(i: int) -> str:
    return f"gw-{i:05d}"


_ENCODERS: dict[str, SessionEncoder] = {}


def make_message(gw: str, first_seq: int, rows: int, t0_ms: int, step_ms: int,
                 sent_ms: int, contract: int = 1) -> bytes:
    """``rows`` observations round-robin over the 10 sensors, ``step_ms`` apart per round.

    Contract 2: each gateway's first message carries its session dictionary, later ones only
    its reference (as a connected v2 gateway sends them)."""
    obs = []
    for r in range(rows):
        sensor, qty = SENSORS[r % len(SENSORS)]
        quality = Quality()
        quality.set("gross_range", 1)
        quality.set("spike", 1)
        t = t0_ms + (r // len(SENSORS)) * step_ms
        obs.append(Observation(Datastream(gw, sensor, qty), 10.0 + (first_seq + r) % 500 / 10,
                               t, PROVENANCE[sensor], quality=quality, sequence=first_seq + r))
    if contract == 2:
        encoder = _ENCODERS.setdefault(gw, SessionEncoder(gw))
        return encoder.encode(Batch(gw, tuple(obs)), sent_ms=sent_ms).payload
    return encode_batch(Batch(gw, tuple(obs)), sent_ms=sent_ms, version=1)


# ---------------------------------------------------------------------------------------
# Publisher process


def publisher(port: int, plan: dict[str, object], ready: mp.Event, go: mp.Event,  # type: ignore[valid-type]
              done: mp.Queue) -> None:  # type: ignore[type-arg]
    """Publish the plan's messages over a few connections; reports (published, seconds)."""
    import paho.mqtt.client as paho

    kind = str(plan["kind"])
    n_gw = int(plan["gateways"])  # type: ignore[call-overload]
    conns = int(plan["connections"])  # type: ignore[call-overload]
    clients = []
    for c in range(conns):
        cl = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"sim-{os.getpid()}-{c}",
                         protocol=paho.MQTTv5)
        cl.max_inflight_messages_set(1000)
        cl.max_queued_messages_set(0)
        cl.connect("127.0.0.1", port, keepalive=120)
        cl.loop_start()
        clients.append(cl)
    messages: list[tuple[str, bytes]] = []
    now = int(time.time() * 1000)
    if kind in ("steady", "burst"):
        per_gw = int(plan["messages_per_gateway"])  # type: ignore[call-overload]
        rows = int(plan["rows"])  # type: ignore[call-overload]
        step = int(plan["step_ms"])  # type: ignore[call-overload]
        start_seq = int(plan.get("start_seq", 1))  # type: ignore[call-overload]
        t_base = now - per_gw * rows // len(SENSORS) * step - 60_000
        for m in range(per_gw):
            for g in range(n_gw):
                gw = gateway_id(g)
                first = start_seq + m * rows
                t0 = t_base + m * (rows // len(SENSORS)) * step
                messages.append((f"duet/v1/{gw}/obs", make_message(
                    gw, first, rows, t0, step, now, int(plan.get("contract", 1)))))  # type: ignore[call-overload]
    if kind == "latency":  # one message per gateway first: the twin meets every gateway
        for g in range(n_gw):
            gw = gateway_id(g)
            now_ms = int(time.time() * 1000)
            clients[g % conns].publish(f"duet/v1/{gw}/obs", make_message(
                gw, 1, 10, now_ms - 1000, 0, now_ms, int(plan.get("contract", 1))),  # type: ignore[call-overload]
                qos=1)
    if kind in ("steady", "burst") and int(plan.get("contract", 1)) == 2:  # type: ignore[call-overload]
        # a v2 gateway's first message carries its session dictionary; with several workers
        # another worker may read the next one first and answer `need`, which a real gateway
        # answers by sending the dictionary again and the simulator does not: so the first
        # message of every gateway is sent (and stored, see run) before the clock starts
        for i, (topic, payload) in enumerate(messages[:n_gw]):
            clients[i % conns].publish(topic, payload, qos=1)
        messages = messages[n_gw:]
    ready.set()
    go.wait()
    started = time.monotonic()
    published = 0
    if kind in ("steady", "burst"):
        for i, (topic, payload) in enumerate(messages):
            info = clients[i % conns].publish(topic, payload, qos=1)
            while info.rc == paho.MQTT_ERR_QUEUE_SIZE:
                time.sleep(0.001)
                info = clients[i % conns].publish(topic, payload, qos=1)
            published += 1
    else:  # latency: each gateway one 10-observation message per interval, spread evenly
        interval = float(plan["interval_s"])  # type: ignore[arg-type]
        duration = float(plan["duration_s"])  # type: ignore[arg-type]
        seqs = [11] * n_gw
        gap = interval / n_gw
        i = 0
        while time.monotonic() - started < duration:
            due = started + i * gap
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            g = i % n_gw
            gw = gateway_id(g)
            now_ms = int(time.time() * 1000)
            payload = make_message(gw, seqs[g], 10, now_ms - 1000, 0, now_ms,
                                   int(plan.get("contract", 1)))  # type: ignore[call-overload]
            seqs[g] += 10
            clients[i % conns].publish(f"duet/v1/{gw}/obs", payload, qos=1)
            published += 1
            i += 1
    for cl in clients:  # wait for every PUBACK
        while cl._out_messages:  # paho keeps unacknowledged messages here
            time.sleep(0.01)
    done.put((published, time.monotonic() - started))
    for cl in clients:
        cl.loop_stop()
        cl.disconnect()


# ---------------------------------------------------------------------------------------
# Processes and their costs


def io_counts(pid: int) -> tuple[int, int]:
    """(write_bytes, wchar) of ``/proc/<pid>/io``.

    ``write_bytes`` is what the process caused to be written through the page cache, counted
    when a page-cache folio turns dirty: a small write into a clean large folio counts the
    whole folio. ``wchar`` is the bytes the process handed to write calls (files and pipes;
    PostgreSQL sends to its clients with send(), which is not counted)."""
    written = wchar = 0
    try:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("write_bytes:"):
                written = int(line.split()[1])
            elif line.startswith("wchar:"):
                wchar = int(line.split()[1])
    except OSError:
        pass
    return written, wchar


@dataclass
class ProcSample:
    cpu: dict[int, float] = field(default_factory=dict)
    written: dict[int, int] = field(default_factory=dict)
    wchar: dict[int, int] = field(default_factory=dict)
    rss: dict[int, int] = field(default_factory=dict)


def sample(pids: list[int]) -> ProcSample:
    s = ProcSample()
    for pid in pids:
        try:
            p = psutil.Process(pid)
            t = p.cpu_times()
            s.cpu[pid] = t.user + t.system
            s.rss[pid] = p.memory_info().rss
            s.written[pid], s.wchar[pid] = io_counts(pid)
        except psutil.Error:
            pass
    return s


def delta(a: ProcSample, b: ProcSample) -> tuple[float, int, int]:
    """(CPU seconds, bytes written, peak RSS) between two samples of the same processes."""
    cpu = sum(b.cpu[p] - a.cpu.get(p, 0.0) for p in b.cpu)
    written = sum(b.written[p] - a.written.get(p, 0) for p in b.written)
    return cpu, written, max(b.rss.values(), default=0)


class Broker:
    def __init__(self, work: Path) -> None:
        self.port = free_port()
        conf = work / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {work}/\nautosave_interval 30\nuser root\n"
            "max_queued_messages 5000000\nmax_inflight_messages 1000\n"
            "log_dest none\n")
        mosq = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = subprocess.Popen([mosq, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)


@dataclass
class Setup:
    name: str
    store: str  # "sqlite" | "postgresql" | "baseline"
    workers: int


def receiver_cmd(setup: Setup, target: str, port: int, worker: int, http_port: int,
                 baseline_dir: Path | None) -> list[str]:
    if setup.store == "baseline":
        assert baseline_dir is not None
        code = (f"import sys; sys.path.insert(0, {str(baseline_dir)!r}); "
                "from edge.cli import main; main()")
        return [sys.executable, "-c", code, "ingest", "--port", str(port), "--store", target,
                "--client-id", f"rx-{worker}"]
    return [sys.executable, "-c", "from edge.cli import main; main()", "ingest", "--port",
            str(port), "--store", target, "--client-id", f"rx-{worker}", "--http",
            f"127.0.0.1:{http_port}", *RECEIVER_ARGS]


def stored_count(setup: Setup, target: str) -> int:
    try:
        if setup.store == "postgresql":
            import psycopg

            with psycopg.connect(target, connect_timeout=5) as c:
                row = c.execute("SELECT coalesce(sum(observations), 0)::int8 FROM seq_ledger"
                                ).fetchone()
                return int(row[0]) if row else 0
        db = sqlite3.connect(f"file:{target}?mode=ro", uri=True, timeout=5)
        try:
            sql = ("SELECT count(*) FROM observation" if setup.store == "baseline"
                   else "SELECT coalesce(sum(observations), 0) FROM gateway")
            return int(db.execute(sql).fetchone()[0])
        finally:
            db.close()
    except Exception:
        return 0


def duplicate_rows(setup: Setup, target: str) -> int:
    sql = ("SELECT count(*) FROM (SELECT gateway_id, seq FROM observation GROUP BY 1, 2 "
           "HAVING count(*) > 1) d")
    if setup.store == "postgresql":
        import psycopg

        with psycopg.connect(target) as c:
            row = c.execute(sql).fetchone()
            return int(row[0]) if row else 0
    if setup.store == "baseline":
        sql = ("SELECT count(*) FROM (SELECT gateway, seq FROM observation GROUP BY 1, 2 "
               "HAVING count(*) > 1)")
    db = sqlite3.connect(target)
    try:
        return int(db.execute(sql).fetchone()[0])
    finally:
        db.close()


def latency_buckets(http_ports: list[int]) -> dict[float, float]:
    """Cumulative duet_ingest_end_to_end_seconds buckets, summed over the workers."""
    buckets: dict[float, float] = {}
    for port in http_ports:
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        except OSError:
            continue
        for line in text.decode().splitlines():
            if line.startswith("duet_ingest_end_to_end_seconds_bucket"):
                le = line.split('le="')[1].split('"')[0]
                bound = float("inf") if le == "+Inf" else float(le)
                buckets[bound] = buckets.get(bound, 0.0) + float(line.rsplit(" ", 1)[1])
    return buckets


def quantiles(buckets: dict[float, float], since: dict[float, float]
              ) -> tuple[float | None, float | None]:
    """p50/p99 of the observations counted after ``since`` (linear within a bucket)."""
    diff = {b: c - since.get(b, 0.0) for b, c in buckets.items()}
    bounds = sorted(diff)
    if not bounds or diff[bounds[-1]] <= 0:
        return None, None
    total = diff[bounds[-1]]

    def q(p: float) -> float:
        want = p * total
        prev_b, prev_c = 0.0, 0.0
        for b in bounds:
            c = diff[b]
            if c >= want:
                if b == float("inf"):
                    return prev_b
                return prev_b + (b - prev_b) * ((want - prev_c) / max(c - prev_c, 1e-9))
            prev_b, prev_c = b, c
        return bounds[-1]

    return q(0.5), q(0.99)


def pg_pids(pg: PgServer) -> list[int]:
    pid = pg.pid
    if pid is None:
        return []
    try:
        return [pid, *(c.pid for c in psutil.Process(pid).children())]
    except psutil.Error:
        return [pid]


# ---------------------------------------------------------------------------------------
# One run


def wait_ready(setup: Setup, receivers: list[subprocess.Popen[bytes]], http_ports: list[int],
               run_dir: Path) -> None:
    """Until every receiver has opened its store (schema created) and subscribed."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for r in receivers:
            if r.poll() is not None:
                raise RuntimeError(f"receiver exited: {(run_dir / 'rx-0.log').read_text()}")
        if setup.store == "baseline":
            time.sleep(3.0)
            return
        ready = 0
        for port in http_ports:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)
                ready += 1
            except OSError:
                pass
        if ready == len(http_ports):
            return
        time.sleep(0.2)
    raise RuntimeError("receivers not ready after 60 s")


def pg_role(pid: int) -> str:
    """A PostgreSQL process's role from its title ("postgres: checkpointer" -> checkpointer)."""
    try:
        title = " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return "gone"
    if not title.startswith("postgres:"):
        return "postmaster"
    words = title.split(":", 1)[1].split()
    if len(words) >= 3 and "(" in words[2]:
        return "backend"
    return words[0] if words else "other"


class PgTracker:
    """CPU and bytes written by every PostgreSQL process, including short-lived ones.

    ``/proc/<pid>/io`` dies with its process, so a before/after sample misses an autovacuum
    worker (or a client's backend) that came and went during the run. This polls the
    postmaster's children every 0.2 s and keeps each one's last counters; a process that lives
    less than that between two polls can still be missed.
    """

    def __init__(self, pg: PgServer) -> None:
        self.pg = pg
        self.first = sample(pg_pids(pg))
        self.last = ProcSample(cpu=dict(self.first.cpu), written=dict(self.first.written),
                               wchar=dict(self.first.wchar), rss=dict(self.first.rss))
        self.roles: dict[int, str] = {pid: pg_role(pid) for pid in self.first.written}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(0.2):
            self.poll()

    def poll(self) -> None:
        now = sample(pg_pids(self.pg))
        for pid in now.written:
            if pid not in self.roles:
                self.roles[pid] = pg_role(pid)
        self.last.cpu.update(now.cpu)
        self.last.written.update(now.written)
        self.last.wchar.update(now.wchar)
        self.last.rss.update(now.rss)

    def stop(self) -> tuple[float, int, int, dict[str, int]]:
        """(CPU seconds, bytes written, bytes handed to write calls, bytes written by kind of
        process) since the start."""
        self._stop.set()
        self._thread.join(5)
        self.poll()
        cpu, written, _ = delta(self.first, self.last)
        wchar = sum(b - self.first.wchar.get(pid, 0) for pid, b in self.last.wchar.items())
        roles: dict[str, int] = {}
        for pid, after in self.last.written.items():
            role = self.roles.get(pid, "gone")
            roles[role] = roles.get(role, 0) + after - self.first.written.get(pid, 0)
        return cpu, written, wchar, roles


def pg_commits(target: str) -> int:
    import psycopg

    with psycopg.connect(target, autocommit=True) as c:
        row = c.execute("SELECT xact_commit::int8 FROM pg_stat_database "
                        "WHERE datname = current_database()").fetchone()
    return int(row[0]) if row else 0


def pg_bytes(target: str) -> tuple[int, int]:
    """(WAL bytes so far, heap + index bytes of the observation partitions)."""
    import psycopg

    with psycopg.connect(target, autocommit=True) as c:
        wal = c.execute("SELECT wal_bytes::int8 FROM pg_stat_wal").fetchone()
        size = c.execute("SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::int8 "
                         "FROM pg_class c WHERE c.relname LIKE 'observation_2%' "
                         "AND c.relkind = 'r'").fetchone()
    return (int(wal[0]) if wal else 0), (int(size[0]) if size else 0)


def run(setup: Setup, plan: dict[str, object], work: Path, baseline_dir: Path | None,
        expected: int, timeout_s: float, profile_dir: Path | None = None) -> dict[str, object]:
    run_dir = Path(tempfile.mkdtemp(prefix=f"{setup.name}-", dir=work))
    broker = Broker(run_dir)
    pg: PgServer | None = None
    if setup.store == "postgresql":
        bindir = _pg_bin_dir()
        assert bindir is not None, "PostgreSQL not installed: bash scripts/setup.sh test"
        pg = PgServer(bindir)
        with open(pg.datadir / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write("shared_buffers = 256MB\nmax_wal_size = 4GB\ncheckpoint_timeout = 30min\n")
            conf.writelines(f"{setting}\n" for setting in PG_SETTINGS)
        pg.start()
        target = pg.dsn()
    else:
        target = str(run_dir / "twin.db")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    http_ports = [free_port() for _ in range(setup.workers)]
    logs = [open(run_dir / f"rx-{w}.log", "wb") for w in range(setup.workers)]  # noqa: SIM115
    receivers = [subprocess.Popen(receiver_cmd(setup, target, broker.port, w, http_ports[w],
                                               baseline_dir), cwd=ROOT, env=env,
                                  stdout=logs[w], stderr=subprocess.STDOUT)
                 for w in range(setup.workers)]
    try:
        wait_ready(setup, receivers, http_ports, run_dir)
        profiler = None
        if profile_dir is not None:
            profile_dir.mkdir(parents=True, exist_ok=True)
            out = profile_dir / f"{setup.store}-{setup.workers}.txt"
            profiler = subprocess.Popen(
                [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(receivers[0].pid), "--format", "raw",
                 "--output", str(out), "--nonblocking"], stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL)
        ready, go, done = mp.Event(), mp.Event(), mp.Queue()
        pub = mp.Process(target=publisher, args=(broker.port, plan, ready, go, done))
        pub.start()
        ready.wait(900)
        latency = plan["kind"] == "latency"
        warm = 0
        warm_up = latency or int(plan.get("contract", 1)) == 2  # type: ignore[call-overload]
        if warm_up:  # wait until the warm-up message of every gateway is stored
            warm = int(plan["gateways"]) * int(plan.get("rows", 10))  # type: ignore[call-overload]
            end = time.monotonic() + timeout_s
            while stored_count(setup, target) < warm and time.monotonic() < end:
                time.sleep(0.5)
            if latency:
                expected = warm
        since = latency_buckets(http_ports) if setup.store != "baseline" else {}
        rx_pids = [r.pid for r in receivers]
        if pg is not None:
            # the warm-up's rows and registrations are not the run's: frozen (what a vacuum
            # does to them sooner or later) and written before the clock starts
            import psycopg

            with psycopg.connect(target, autocommit=True) as c:
                c.execute("VACUUM (FREEZE)")
                c.execute("CHECKPOINT")
        tracker = PgTracker(pg) if pg is not None else None
        pub_result: tuple[int, float] | None = None
        if plan.get("preload"):
            # the catch-up after an outage: everything is published while the workers are
            # stopped (SIGSTOP: still connected, the broker queues for them), then the clock
            # runs while they drain it — the simulator no longer competes for the CPU
            for r in receivers:
                os.kill(r.pid, signal.SIGSTOP)
            go.set()
            pub_result = done.get(timeout=timeout_s)
        before = {"rx": sample(rx_pids), "broker": sample([broker.proc.pid]),
                  "pub": sample([pub.pid or 0])}
        base_count = stored_count(setup, target)
        wal0, heap0 = pg_bytes(target) if pg is not None else (0, 0)
        commits0 = pg_commits(target) if pg is not None else 0
        t0 = time.monotonic()
        if plan.get("preload"):
            for r in receivers:
                os.kill(r.pid, signal.SIGCONT)
        else:
            go.set()
        first_t: float | None = None
        count = 0
        deadline = t0 + timeout_s
        while time.monotonic() < deadline:
            if pub_result is None and not done.empty():
                pub_result = done.get()
                if latency:
                    expected = warm + pub_result[0] * 10
            count = stored_count(setup, target)
            if count > base_count and first_t is None:
                first_t = time.monotonic()
            if count >= expected and (pub_result is not None or not latency):
                break
            time.sleep(0.25)
        t_done = time.monotonic()
        if pub_result is None:
            pub_result = done.get(timeout=120) if count >= expected else (0, 0.0)
        published, pub_s = pub_result
        pub.join(30)
        count -= base_count
        expected -= base_count
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            profiler.wait(30)
        wal1, heap1 = wal0, heap0
        commits = 0
        if pg is not None:
            import psycopg

            commits = pg_commits(target) - commits0 - 1  # less our own query's
            with psycopg.connect(target, autocommit=True) as c:
                c.execute("CHECKPOINT")  # the rows' heap pages hit the disk now, and count
                if plan.get("lifetime"):
                    # what the rows will still cost: the vacuum that freezes them (PostgreSQL
                    # does it eventually, anti-wraparound), after their pages were written
                    c.execute("VACUUM (FREEZE) observation")
                    c.execute("CHECKPOINT")
                    if tracker is not None:
                        tracker.poll()  # this backend's writes, before it exits
            wal1, heap1 = pg_bytes(target)
        after = {"rx": sample(rx_pids), "broker": sample([broker.proc.pid]),
                 "pub": sample([pub.pid or 0])}
        p50, p99 = (quantiles(latency_buckets(http_ports), since) if setup.store != "baseline"
                    else (None, None))
        wall = t_done - t0
        rx_cpu, rx_written, rx_rss = delta(before["rx"], after["rx"])
        pg_cpu, pg_written, pg_wchar, roles = (tracker.stop() if tracker is not None
                                               else (0.0, 0, 0, {}))
        br_cpu, _, br_rss = delta(before["broker"], after["broker"])
        dups = duplicate_rows(setup, target)
        return {
            "setup": setup.name, "stored": count, "expected": expected, "published": published,
            "publish_s": round(pub_s, 1), "wall_s": round(wall, 1),
            "obs_per_s": round(count / wall) if wall else 0,
            "drain_obs_per_s": round(count / (t_done - first_t)) if first_t else 0,
            "duplicates": dups, "lost": expected - count,
            "p50_s": None if p50 is None else round(p50, 3),
            "p99_s": None if p99 is None else round(p99, 3),
            "receiver_cpu_pct": round(100 * rx_cpu / wall, 1) if wall else 0,
            "receiver_rss_mb": round(rx_rss / 2**20, 1),
            "broker_cpu_pct": round(100 * br_cpu / wall, 1) if wall else 0,
            "broker_rss_mb": round(br_rss / 2**20, 1),
            "postgres_cpu_pct": round(100 * pg_cpu / wall, 1) if wall else 0,
            "bytes_written_per_obs": round((rx_written + pg_written) / max(count, 1), 1),
            "pg_wal_per_obs": round((wal1 - wal0) / max(count, 1), 1),
            "pg_table_per_obs": round((heap1 - heap0) / max(count, 1), 1),
            "obs_per_receiver_cpu_s": round(count / rx_cpu) if rx_cpu else 0,
            "receiver_bytes_per_obs": round(rx_written / max(count, 1), 1),
            "pg_write_call_bytes_per_obs": round(pg_wchar / max(count, 1), 1),
            "pg_bytes_per_obs_by_process": {r: round(w / max(count, 1), 1)
                                            for r, w in sorted(roles.items()) if w},
            "pg_commits": commits if pg is not None else None,
        }
    finally:
        for r in receivers:
            r.send_signal(signal.SIGTERM)
        for r in receivers:
            try:
                r.wait(30)
            except subprocess.TimeoutExpired:
                r.kill()
        for f in logs:
            f.close()
        broker.stop()
        if pg is not None:
            pg.destroy()


def store_path_only(n_gateways: int, per_gateway: int, group: int) -> dict[str, object]:
    """Decode + store without MQTT: the receiver's own ceiling, and the bytes PostgreSQL writes
    in steady state (WAL segments recycled, as on a running twin; a fresh cluster also
    zero-fills each new 16 MB WAL segment once)."""
    import asyncio

    import psycopg

    from edge.ingest.receiver import Receiver, ReceiverSettings

    bindir = _pg_bin_dir()
    assert bindir is not None
    pg = PgServer(bindir)
    with open(pg.datadir / "postgresql.conf", "a", encoding="utf-8") as conf:
        conf.write("shared_buffers = 256MB\nwal_buffers = 16MB\nwal_init_zero = off\n"
                   "max_wal_size = 4GB\n")
    pg.start()
    now = int(time.time() * 1000)
    msgs = []
    for m in range(per_gateway):
        for g in range(n_gateways):
            gw = gateway_id(g)
            msgs.append((f"duet/v1/{gw}/obs", make_message(gw, m * 10 + 1, 10,
                                                           now - 3_600_000 + m * 60_000,
                                                           60_000, now)))
    warm = n_gateways  # first message of every gateway: registration, partitions

    async def go() -> dict[str, object]:
        rx = Receiver(ReceiverSettings(store_path=pg.dsn()))
        await rx.open()
        for i in range(0, warm, group):
            await rx.handle_group(msgs[i:min(i + group, warm)])
        with psycopg.connect(pg.dsn(), autocommit=True) as c:
            c.execute("CHECKPOINT")
            before = sample(pg_pids(pg))
            wal0 = c.execute("SELECT wal_bytes::int8 FROM pg_stat_wal").fetchone()
            me0 = sample([os.getpid()])
            t = time.perf_counter()
            for i in range(warm, len(msgs), group):
                await rx.handle_group(msgs[i:i + group])
            dt = time.perf_counter() - t
            me1 = sample([os.getpid()])
            wal1 = c.execute("SELECT wal_bytes::int8 FROM pg_stat_wal").fetchone()
            c.execute("CHECKPOINT")
            after = sample(pg_pids(pg))
        n = rx.counters.observations_new - warm * 10
        await rx.close()
        pg_cpu, pg_written, _ = delta(before, after)
        my_cpu, _, _ = delta(me0, me1)
        assert wal0 is not None and wal1 is not None
        return {"setup": "decode + store into PostgreSQL, no MQTT", "stored": n,
                "obs_per_s": round(n / dt), "obs_per_receiver_cpu_s": round(n / my_cpu),
                "postgres_cpu_pct": round(100 * pg_cpu / dt, 1),
                "pg_wal_per_obs": round((int(wal1[0]) - int(wal0[0])) / n, 1),
                "postgres_bytes_written_per_obs": round(pg_written / n, 1)}

    try:
        return asyncio.run(go())
    finally:
        pg.destroy()


def extract_baseline(rev: str, work: Path) -> Path:
    """The edge package of an earlier release, for the same-run baseline."""
    dest = work / f"baseline-{rev}"
    dest.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "edge"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("scenario", choices=["steady", "latency", "burst", "store"])
    ap.add_argument("--gateways", type=int, default=None)
    ap.add_argument("--messages", type=int, default=None, help="steady: messages per gateway")
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--duration", type=float, default=120.0, help="latency: seconds")
    ap.add_argument("--setups", default=None,
                    help="comma list of baseline,sqlite,pg1,pg2 (default: all for steady)")
    ap.add_argument("--baseline-rev", default="7b427f2")
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--preload", action="store_true",
                    help="steady/burst: publish everything while the workers are stopped, "
                         "then time the drain (no simulator competing for the CPU)")
    ap.add_argument("--contract", type=int, choices=[1, 2], default=1,
                    help="batches as contract v1 (self-contained; the baseline reads only these) "
                    "or v2 (session dictionary once, then references)")
    ap.add_argument("--profile", type=Path, default=None,
                    help="py-spy the first receiver of each set-up into this folder")
    ap.add_argument("--lifetime", action="store_true",
                    help="PostgreSQL: also count the vacuum that freezes the rows (after a "
                    "checkpoint, as it happens on a running twin)")
    ap.add_argument("--receiver-arg", action="append", default=[], metavar="ARG",
                    help="an extra option for every receiver of this run, e.g. "
                    "--receiver-arg=--group-linger-ms=200")
    ap.add_argument("--pg-setting", action="append", default=[], metavar="NAME=VALUE",
                    help="an extra postgresql.conf line for the clusters of this run")
    args = ap.parse_args()
    PG_SETTINGS.extend(args.pg_setting)
    RECEIVER_ARGS.extend(args.receiver_arg)
    all_setups = {"baseline": Setup("baseline SQLite (7b427f2)", "baseline", 1),
                  "sqlite": Setup("SQLite, 1 worker", "sqlite", 1),
                  "pg1": Setup("PostgreSQL, 1 worker", "postgresql", 1),
                  "pg2": Setup("PostgreSQL, 2 workers", "postgresql", 2)}
    if args.scenario == "store":
        result = store_path_only(args.gateways or 2000, args.messages or 25, 200)
        print(json.dumps(result) if args.json else
              "  ".join(f"{k}={v}" for k, v in result.items()), flush=True)
        return
    if args.scenario == "steady":
        n_gw = args.gateways or 2000
        per = args.messages or 25
        plan: dict[str, object] = {"contract": args.contract, "kind": "steady", "gateways": n_gw, "connections":
                                   args.connections, "messages_per_gateway": per, "rows": 10,
                                   "step_ms": 60_000}
        expected = n_gw * per * 10
        default = "baseline,sqlite,pg1,pg2"
    elif args.scenario == "latency":
        n_gw = args.gateways or 20_000
        plan = {"contract": args.contract, "kind": "latency", "gateways": n_gw, "connections": args.connections,
                "interval_s": 60.0, "duration_s": args.duration}
        expected = int(args.duration / 60.0 * n_gw) * 10
        default = "pg1"
    else:
        n_gw = args.gateways or 20_000
        plan = {"contract": args.contract, "kind": "burst", "gateways": n_gw, "connections": args.connections,
                "messages_per_gateway": 10, "rows": 60, "step_ms": 1000}
        expected = n_gw * 10 * 60
        default = "pg2"
    if args.lifetime:
        plan["lifetime"] = True
    if args.preload:
        if plan["kind"] == "latency":
            ap.error("--preload applies to steady and burst")
        plan["preload"] = True
    work = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    baseline_dir = None
    chosen = (args.setups or default).split(",")
    if "baseline" in chosen:
        baseline_dir = extract_baseline(args.baseline_rev, work)
    results = []
    try:
        for key in chosen:
            result = run(all_setups[key], plan, work, baseline_dir, expected, args.timeout,
                         args.profile)
            results.append(result)
            print(json.dumps(result) if args.json else
                  "  ".join(f"{k}={v}" for k, v in result.items()), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
