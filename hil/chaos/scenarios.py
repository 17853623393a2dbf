"""The scenarios: each starts its own real processes, injects its faults, settles, counts.

Every scenario is bounded by the plan: a number of faults (``--kills``) spread over about
``--seconds``, then the settle phase (at most ``SETTLE_S``).
"""

from __future__ import annotations

import contextlib
import json
import random
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hil.chaos import poison
from hil.chaos.accounting import Tally
from hil.chaos.damage import DAMAGE
from hil.chaos.rig import Rig, RigOptions

ROOT = Path(__file__).resolve().parents[2]
SETTLE_S = 90.0
KILL_KINDS = ("gateway", "receiver", "broker", "storage")


@dataclass(slots=True)
class Plan:
    seconds: float  # length of each scenario's fault phase
    kills: dict[str, int]  # per KILL_KINDS: faults per scenario of that kind
    outage_s: float
    fuzz_n: int  # inputs per decoder and per contract input kind
    rate_hz: float  # frames per second of each emulated SDS011
    seed: int
    workdir: Path
    jobs: int = 1  # scenarios side by side
    durability: str = "normal"  # the gateways' [buffer] durability


@dataclass(slots=True)
class Result:
    name: str
    faults: list[str] = field(default_factory=list)
    tallies: list[Tally] = field(default_factory=list)
    figures: dict[str, object] = field(default_factory=dict)  # fuzzing, rates, gateway counters
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # failures other than loss
    skipped: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems and all(t.clean for t in self.tallies)

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "ok": self.ok, "skipped": self.skipped,
                "faults": self.faults, "tallies": [t.as_dict() for t in self.tallies],
                "figures": self.figures, "notes": self.notes, "problems": self.problems,
                "seconds": round(self.seconds, 1)}


class Context:
    """What a scenario gets: the plan, its own folder and random numbers, its result."""

    def __init__(self, plan: Plan, name: str, index: int) -> None:
        self.plan = plan
        self.name = name
        self.dir = plan.workdir / name
        self.rng = random.Random(f"{plan.seed}/{name}")
        self.seed = plan.seed * 1000 + index
        self.result = Result(name)

    def rig(self, options: RigOptions | None = None, gateway_id: str | None = None) -> Rig:
        options = options or RigOptions()
        options.rate_hz = self.plan.rate_hz
        options.durability = self.plan.durability
        return Rig(self.dir, gateway_id or f"gw-{self.name}", options, self.seed)

    def intervals(self, count: int, least: float = 0.3) -> list[float]:
        """``count`` random waits averaging ``seconds / count`` (at least ``least``)."""
        mean = max(least * 2, self.plan.seconds / max(count, 1))
        return [self.rng.uniform(least, 2 * mean - least) for _ in range(count)]


Runner = Callable[[Context], None]


# ---------------------------------------------------------------------- shared steps
def finish(ctx: Context, rig: Rig) -> None:
    """Settle, count, and note what the processes did by themselves."""
    if not rig.settle(SETTLE_S):
        ctx.result.notes.append(f"after settling the twin still lacks {rig.outstanding():,} "
                                "committed numbers (no gap announced for them)")
    ctx.result.tallies.append(rig.tally())
    for ended in rig.health.exits:
        note = f"{ended.name} exited by itself with status {ended.code}: {ended.last_line}"
        ctx.result.notes.append(note)
        if ended.traceback:
            ctx.result.problems.append(f"{ended.name} crashed with a traceback "
                                       f"(see {rig.dir})")
    ctx.result.figures.update(gateway_log_counts(rig.gateway.log_text()))
    for service in (rig.gateway, rig.ingest):
        logged = service.log_text().count("Traceback")
        if logged:  # e.g. asyncio reporting a library's callback error; the process lived on
            ctx.result.notes.append(f"{service.name} logged {logged} traceback(s) and kept "
                                    f"running: {service.log_path}")
    if rig.ledger.unreadable:
        ctx.result.problems.append(f"{rig.ledger.unreadable} journal records unreadable")


def gateway_log_counts(text: str) -> dict[str, object]:
    """Events of the gateway's JSON log worth seeing beside the figures: how often each
    happened, and for evictions and refusals how many observations they concerned."""
    counts: dict[str, int] = {}
    observations: dict[str, int] = {}
    for line in text.splitlines():
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        event = record.get("event")
        if event in ("restart_unclean", "outbox_corrupt", "disk_full", "outbox_evicted",
                     "retransmit", "dead_letter", "outbox_write_failed", "disk_ok",
                     "journal_skip", "outbox_close_unclean", "refused"):
            counts[event] = counts.get(event, 0) + 1
            if event in ("outbox_evicted", "refused") and isinstance(record.get("count"), int):
                observations[event] = observations.get(event, 0) + record["count"]
    out: dict[str, object] = {"gateway_events": counts} if counts else {}
    if observations:
        out["gateway_observations"] = observations
    return out


def kill_loop(ctx: Context, rig: Rig, kind: str, down: tuple[float, float]) -> None:
    """``kills[kind]`` kill -9 of one process at random moments, each down for a while."""
    service = {"gateway": rig.gateway, "receiver": rig.ingest, "broker": rig.broker}[kind]
    count = ctx.plan.kills[kind]
    for wait in ctx.intervals(count):
        rig.wait(wait)
        rig.kill9(service)
        rig.wait(ctx.rng.uniform(*down))
        rig.restart(service)
    ctx.result.faults.append(f"{count} × kill -9 {service.name}")


# ---------------------------------------------------------------------- process kills
def gateway_kill(ctx: Context) -> None:
    """kill -9 at random moments (also while it starts); the 2nd, 6th, 10th … time during a
    clean shutdown instead (SIGTERM, then SIGKILL 0–1 s later: a power cut while stopping)."""
    rig = ctx.rig()
    count = ctx.plan.kills["gateway"]
    try:
        rig.start()
        stopping = killed_stopping = 0
        for i, wait in enumerate(ctx.intervals(count)):
            rig.wait(wait)
            if i % 4 == 1:
                stopping += 1
                code = rig.stop(rig.gateway, timeout=ctx.rng.uniform(0.0, 1.0))
                killed_stopping += code == -9
            else:
                rig.kill9(rig.gateway)
            rig.wait(ctx.rng.uniform(0.0, 0.5))
            rig.restart(rig.gateway)
        ctx.result.faults.append(
            f"{count - stopping} × kill -9 gateway, {stopping} × SIGTERM then SIGKILL after "
            f"0–1 s ({killed_stopping} killed while shutting down)")
        finish(ctx, rig)
    finally:
        rig.close()


def receiver_kill(ctx: Context) -> None:
    rig = ctx.rig()
    try:
        rig.start()
        kill_loop(ctx, rig, "receiver", (0.0, 2.0))
        finish(ctx, rig)
    finally:
        rig.close()


def broker_kill(persistence: bool, group: str, confirm: str = "twin") -> Runner:
    """kill -9 of the broker; every other time the twin's host goes down with it and its
    receiver comes back 1.5 s after the broker, when the gateway has published into the void
    (what the original campaign saw by chance: the receiver re-subscribing late)."""
    def run(ctx: Context) -> None:
        rig = ctx.rig(RigOptions(persistence=persistence, group=group, confirm=confirm))
        ctx.result.notes.append(
            f"broker persistence {'on' if persistence else 'off'}; receiver "
            f"{'--group ' + group if group else 'plain subscription'}; confirm = {confirm!r}")
        count = ctx.plan.kills["broker"]
        try:
            rig.start()
            for i, wait in enumerate(ctx.intervals(count)):
                rig.wait(wait)
                late = i % 2 == 0
                rig.kill9(rig.broker)
                if late:
                    rig.kill9(rig.ingest)
                rig.wait(ctx.rng.uniform(0.2, 2.0))
                rig.restart(rig.broker)
                if late:
                    rig.wait(1.5)
                    rig.restart(rig.ingest)
            ctx.result.faults.append(f"{count} × kill -9 broker ({(count + 1) // 2} with the "
                                     "receiver back 1.5 s after the broker)")
            finish(ctx, rig)
        finally:
            rig.close()
    return run


def broker_outage(ctx: Context) -> None:
    rig = ctx.rig()
    try:
        rig.start()
        rig.wait(max(1.0, ctx.plan.seconds / 4))
        rig.stop(rig.broker)
        rig.wait(ctx.plan.outage_s)
        rig.restart(rig.broker)
        rig.wait(max(1.0, ctx.plan.seconds / 4))
        ctx.result.faults.append(f"broker stopped for {ctx.plan.outage_s:g} s")
        finish(ctx, rig)
    finally:
        rig.close()


# ---------------------------------------------------------------------- storage
def storage_damage(ctx: Context) -> None:
    """kill -9, then damage the WAL or the database, then start again — round after round.

    Spilling after 0.3 s puts unconfirmed groups in the database (and its WAL) all the time.
    In two rounds out of three the broker is down (nothing leaves the gateway), across a
    gateway restart: the restart spills the journal's backlog to the database and deletes the
    journal, so when the next damage hits, that backlog lives only in the database (and its
    WAL) while newer groups live in the journal — a power cut's worst case.
    """
    rig = ctx.rig(RigOptions(buffer={"spill_after_s": 0.3}))
    kinds = list(DAMAGE)
    count = ctx.plan.kills["storage"]
    done: dict[str, list[int]] = {k: [0, 0] for k in kinds}
    try:
        rig.start()
        for i, wait in enumerate(ctx.intervals(count, least=1.0)):
            kind = kinds[i % len(kinds)]
            if i % 3 == 1:
                rig.kill9(rig.broker)  # down for this round and the next
            rig.wait(wait)
            rig.kill9(rig.gateway)
            hit = DAMAGE[kind](rig.data_dir / "outbox.db", ctx.rng)
            done[kind][0] += 1
            done[kind][1] += int(hit)
            rig.restart(rig.gateway)
            if i % 3 == 2:
                rig.restart(rig.broker)
        for kind, (applied, hits) in done.items():
            if applied:
                ctx.result.faults.append(f"{applied} × kill -9 + {kind} ({hits} hit a file)")
        finish(ctx, rig)
    finally:
        rig.close()


def disk_full(ctx: Context) -> None:
    """The gateway's data_dir on a 24 MiB tmpfs: reserve crossed, then no space at all (with a
    kill -9 and a restart on the full disk), then space back. The receiver is down meanwhile,
    so the backlog has to live on that disk."""
    mount = ctx.dir / "small-disk"
    mount.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        ctx.result.skipped = ("cannot mount a tmpfs for the gateway's data_dir (run as root): "
                              + (done.stderr.strip() or f"mount exited {done.returncode}"))
        return
    reserve = 4 << 20
    rig = ctx.rig(RigOptions(data_dir=mount / "data",
                             buffer={"disk_reserve_bytes": reserve, "spill_after_s": 1.0}))
    phase = max(1.5, ctx.plan.seconds / 4)
    try:
        rig.start()
        rig.wait(phase)
        rig.stop(rig.ingest)
        rig.wait(phase)
        fill(mount, reserve // 2)
        ctx.result.faults.append("free space under the reserve")
        rig.wait(phase)
        fill(mount, 0)
        rig.wait(phase / 2)
        rig.kill9(rig.gateway)
        rig.wait(0.3)
        rig.restart(rig.gateway)
        rig.wait(phase / 2)
        ctx.result.faults.append("disk full (0 bytes free), kill -9 and restart on it")
        for filler in mount.glob("filler-*"):
            filler.unlink()
        rig.restart(rig.ingest)
        rig.wait(phase)
        ctx.result.faults.append("space back")
        finish(ctx, rig)
    finally:
        rig.close()
        subprocess.run(["umount", "-l", str(mount)], check=False, capture_output=True)


def fill(directory: Path, leave_bytes: int) -> None:
    """A filler file leaving about ``leave_bytes`` free (0: until writes fail)."""
    path = directory / f"filler-{leave_bytes}"
    block = b"\0" * 65536
    with open(path, "wb", buffering=0) as fh, contextlib.suppress(OSError):
        while True:
            st = shutil.disk_usage(directory)
            if st.free <= leave_bytes + len(block):
                break
            fh.write(block)
        if leave_bytes == 0:
            while True:
                fh.write(b"\0" * 512)


# ---------------------------------------------------------------------- poison
def poison_payloads(ctx: Context) -> None:
    """Poison and fuzzed messages on other gateways' topics while a healthy gateway sends:
    the healthy gateway's stored rate must hold up."""
    rig = ctx.rig(gateway_id="gw-healthy")
    third = max(2.0, ctx.plan.seconds / 3)
    try:
        rig.start()
        rig.wait(1.0)
        before = stored_rate(rig, third)
        publisher = PoisonPublisher(rig.broker.port, ctx.rng)
        publisher.start()
        try:
            rig.wait(1.0)
            rig.kill9(rig.ingest)  # unacknowledged poison comes back after the restart
            rig.wait(0.5)
            rig.restart(rig.ingest)
            rig.wait(2.0)
            during = stored_rate(rig, third)
        finally:
            publisher.stop()
        ctx.result.faults.append(
            f"{publisher.sent} poison/fuzzed messages ({publisher.named} named, "
            f"{publisher.grid} field×value grid, {publisher.random} byte mutations); "
            "kill -9 of the receiver among them")
        rig.wait(1.0)
        rejected = twin_dead_letters(rig.twin)
        implausible = twin_implausible(rig.twin)
        ctx.result.figures.update({
            "healthy_rate_before": round(before, 1), "healthy_rate_during": round(during, 1),
            "twin_dead_letters": rejected, "twin_implausible_rows": implausible})
        if implausible:
            ctx.result.problems.append(
                f"the twin stored {implausible} implausible rows (sequence < 1, time before "
                "2000 or more than a day ahead, infinite result)")
        if during < 0.5 * before:
            ctx.result.problems.append(
                f"the healthy gateway's stored rate fell from {before:.1f} to {during:.1f} "
                "obs/s while poison arrived")
        if rejected < publisher.named // 2:
            ctx.result.problems.append(f"only {rejected} poison messages dead-lettered")
        finish(ctx, rig)
    finally:
        rig.close()


def stored_rate(rig: Rig, seconds: float) -> float:
    """Observations per second the twin stored for the healthy gateway over ``seconds``."""
    start = twin_count(rig.twin, rig.gateway_id)
    t0 = time.monotonic()
    rig.wait(seconds)
    return (twin_count(rig.twin, rig.gateway_id) - start) / (time.monotonic() - t0)


def twin_count(twin: Path, gw: str) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{twin}?mode=ro", uri=True, timeout=30)) as db:
        return int(db.execute("SELECT count(*) FROM observation o JOIN gateway g"
                              " ON g.id = o.gateway_id WHERE g.name=?", (gw,)).fetchone()[0])


def twin_implausible(twin: Path) -> int:
    """Rows the twin must never store (issue 12 item 6): sequence < 1, a phenomenon time
    before 2000 or more than a day ahead, an infinite result (non-finite ones are NULL)."""
    ahead = int(time.time() * 1000) + 86_400_000
    with contextlib.closing(sqlite3.connect(f"file:{twin}?mode=ro", uri=True, timeout=30)) as db:
        return int(db.execute(
            "SELECT count(*) FROM observation WHERE seq < 1 OR phenomenon_ms < 946684800000"
            " OR phenomenon_ms > ? OR abs(result) > 1.7976931348623157e308", (ahead,)
        ).fetchone()[0])


def twin_dead_letters(twin: Path) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{twin}?mode=ro", uri=True, timeout=30)) as db:
        return int(db.execute("SELECT count(*) FROM dead_letter").fetchone()[0])


class PoisonPublisher:
    """Publishes the named poison first, then the grid and byte mutations, ~100 msg/s."""

    def __init__(self, port: int, rng: random.Random) -> None:
        import paho.mqtt.client as mqtt

        self.rng = random.Random(rng.random())
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="chaos-poison")
        self.client.connect("127.0.0.1", port)
        self.sent = self.named = self.grid = self.random = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="poison", daemon=True)

    def start(self) -> None:
        self.client.loop_start()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.client.loop_stop()
        self.client.disconnect()

    def _publish(self, gw: str, payload: bytes) -> None:
        self.client.publish(f"duet/v1/{gw}/obs", payload, qos=1)
        self.sent += 1
        self._stop.wait(0.01)

    def _run(self) -> None:
        for _name, payload in poison.named("gw-poison"):
            self._publish("gw-poison", payload)
            self.named += 1
        grid = poison.grid("gw-poison-grid")
        while not self._stop.is_set():
            item = next(grid, None)
            if item is not None and self.rng.random() < 0.7:
                self._publish("gw-poison-grid", item[1])
                self.grid += 1
            else:
                self._publish("gw-poison-flip", poison.flipped("gw-poison-flip", self.rng)[1])
                self.random += 1


# ---------------------------------------------------------------------- fuzzing
def fuzz_decoders(ctx: Context) -> None:
    figures = run_json([sys.executable, str(ROOT / "bench" / "fuzz_decoders.py"),
                        "--n", str(ctx.plan.fuzz_n), "--seed", str(ctx.plan.seed), "--json"])
    decoders: dict[str, dict[str, int]] = figures["decoders"]  # type: ignore[assignment]
    ctx.result.faults.append(f"{ctx.plan.fuzz_n:,} inputs × {len(decoders)} decoders")
    ctx.result.figures["decoders"] = {
        name: {"inputs": d["inputs"], "escaped": d["escaped"], "no_resync": d["no_resync"]}
        for name, d in decoders.items()}
    bad = {n: d for n, d in decoders.items() if d["escaped"] or d["no_resync"]}
    for name, d in bad.items():
        ctx.result.problems.append(
            f"{name}: {d['escaped']} escaped exceptions, {d['no_resync']} lost sync")


def fuzz_contract(ctx: Context) -> None:
    figures = run_json([sys.executable, str(ROOT / "bench" / "fuzz_contract.py"),
                        str(ctx.plan.fuzz_n), str(ctx.plan.seed), "--json"])
    kinds: dict[str, dict[str, int]] = figures["kinds"]  # type: ignore[assignment]
    ctx.result.faults.append(f"{ctx.plan.fuzz_n:,} inputs × {len(kinds)} contract input kinds")
    ctx.result.figures["contract"] = kinds
    for name, d in kinds.items():
        if d["escaped"]:
            ctx.result.problems.append(f"{name}: {d['escaped']} escaped exceptions")


def run_json(args: list[str]) -> dict[str, object]:
    done = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, check=False)
    try:
        document: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise RuntimeError(f"{' '.join(args[1:3])} printed no JSON (exit {done.returncode}): "
                           f"{done.stderr.strip()[-300:]}") from None
    return document


# ---------------------------------------------------------------------- the catalogue
@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    run: Runner
    summary: str
    default: bool = True  # in the campaign when --scenarios is not given


SCENARIOS: list[Scenario] = [
    Scenario("gateway-kill", gateway_kill, "kill -9 of duet-edge run"),
    Scenario("receiver-kill", receiver_kill, "kill -9 of duet-edge ingest (shipped group)"),
    Scenario("broker-kill-shared", broker_kill(True, "duet-ingest"),
             "kill -9 of Mosquitto with persistence, shipped shared group"),
    Scenario("broker-kill-shared-nopersist", broker_kill(False, "duet-ingest"),
             "kill -9 of Mosquitto without persistence, shipped shared group"),
    Scenario("broker-kill-plain", broker_kill(True, ""),
             "kill -9 of Mosquitto with persistence, plain subscription"),
    Scenario("broker-kill-plain-nopersist", broker_kill(False, ""),
             "kill -9 of Mosquitto without persistence, plain subscription"),
    Scenario("broker-outage", broker_outage, "Mosquitto stopped for --outage seconds"),
    Scenario("disk-full", disk_full, "data_dir on a small tmpfs: reserve, full, back"),
    Scenario("storage-damage", storage_damage,
             "kill -9 then WAL truncate/scribble/delete, zero-length or scribbled database"),
    Scenario("poison", poison_payloads, "poison and fuzzed messages beside a healthy gateway"),
    Scenario("fuzz-decoders", fuzz_decoders, "bench/fuzz_decoders.py"),
    Scenario("fuzz-contract", fuzz_contract, "bench/fuzz_contract.py"),
    Scenario("canary-broker-confirm", broker_kill(False, "duet-ingest", confirm="broker"),
             "self-check: confirm = \"broker\" on a broker without persistence MUST show loss",
             default=False),
]
