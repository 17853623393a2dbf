"""Does the status page slow ingest? Same-run comparison on the real Gateway + outbox.

    .venv/bin/python bench/bench_web.py [--seconds 8] [--rounds 2]

A flooding in-process source emits PMS5003-sized batches (12 observations) as fast as the
event loop lets it; the real runtime runs them through listeners → durable SQLite outbox
(group commits) → an in-process uplink that confirms everything (so rows are deleted, as in
steady state). Cases, interleaved over ``--rounds`` in a rotating order to cancel drift and
order effects on a shared machine:

  base   no web server at all (baseline)
  idle   web server running and recording history, nobody looking
  1 Hz   a client in another process polls, every second, what an open host page polls
         (/home/main), what an open technician page polls (/api/status, /healthz), and
         /metrics and /api/latest; /api/history every 30 s
  10 Hz  the same ten times a second (a stress case, far above any real use)

Printed per case: observations committed per second (median of rounds), ratio to base, and
the worst event-loop lag seen by a 10 ms ticker (how late a timer fired).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from edge.config import parse_config
from edge.model import Datastream, Delivery, Observation, Provenance
from edge.runtime import Gateway, RuntimeOptions
from edge.seams import SourceContext, UplinkPort
from edge.web.settings import WebSettings

QTYS = ("pm1", "pm2_5", "pm10", "pm1_cf1", "pm2_5_cf1", "pm10_cf1",
        "nc0_3", "nc0_5", "nc1", "nc2_5", "nc5", "nc10")
PROV = Provenance("PMS5003", sensor_serial="bench")

POLLER = textwrap.dedent("""
    import sys, time, httpx
    url, hz = sys.argv[1], float(sys.argv[2])
    c = httpx.Client(base_url=url, timeout=5)
    last_history = 0.0
    while True:
        t = time.monotonic()
        for p in ("/home/main", "/api/status", "/api/latest", "/metrics", "/healthz"):
            c.get(p)
        if t - last_history >= 30:
            c.get("/api/history"); last_history = t
        time.sleep(max(0.0, 1 / hz - (time.monotonic() - t)))
""")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FloodSource:
    def __init__(self, name: str) -> None:
        self.name = name
        self.streams = [Datastream("gw-bench", name, q) for q in QTYS]

    async def run(self, ctx: SourceContext) -> None:
        ctx.health.state = "connected"
        value = 0.0
        while True:
            now = time.time_ns() // 1_000_000
            value = (value + 0.37) % 80
            ctx.emit([Observation(s, value, now, PROV) for s in self.streams])
            ctx.health.frames_ok += 1
            ctx.health.observations += len(self.streams)
            ctx.health.last_frame_ms = now
            await asyncio.sleep(0)


class SinkUplink:
    """Confirms every batch at once (no network): the outbox deletes as in steady state."""

    name = "sink"

    async def run(self, port: UplinkPort) -> None:
        port.health.state = "connected"
        port.rewind()
        while True:
            batch = port.next_batch(2000)
            if not batch:
                await port.wait_for_data(0.2)
                continue
            port.settle(batch, Delivery(confirmed=batch.sequences), time.monotonic())
            await asyncio.sleep(0)


def config(work: Path, web_port: int | None) -> Any:
    web = f"[web]\nport = {web_port}\n" if web_port else ""
    return parse_config(f"""
[gateway]
id = "gw-bench"
data_dir = "{work}"
[[sources]]
name = "flood"
type = "pms5003"
port = "/dev/null"
[buffer]
commit_interval_s = 0.5
{web}""")


async def lag_monitor(worst: list[float]) -> None:
    loop = asyncio.get_running_loop()
    while True:
        t = loop.time()
        await asyncio.sleep(0.01)
        worst[0] = max(worst[0], loop.time() - t - 0.01)


async def one_case(web: bool, poll_hz: float, seconds: float) -> tuple[float, float]:
    with tempfile.TemporaryDirectory(prefix="bench-web-") as tmp:
        port = free_port() if web else None
        gw = Gateway(
            config(Path(tmp), port),
            options=RuntimeOptions(drain_timeout_s=0.5),
            sources=[FloodSource("flood")],
            uplinks=[SinkUplink()],
        )
        stop = asyncio.Event()
        task = asyncio.create_task(gw.run(stop))
        poller = None
        if poll_hz:
            await asyncio.sleep(0.3)
            poller = subprocess.Popen([sys.executable, "-c", POLLER, f"http://127.0.0.1:{port}", str(poll_hz)])
        await asyncio.sleep(1.0)  # warm up
        worst = [0.0]
        monitor = asyncio.create_task(lag_monitor(worst))
        start_n, start_t = gw.outbox.counters.received, time.monotonic()
        await asyncio.sleep(seconds)
        rate = (gw.outbox.counters.received - start_n) / (time.monotonic() - start_t)
        monitor.cancel()
        if poller is not None:
            poller.terminate()
            poller.wait(5)
        stop.set()
        await asyncio.gather(task, monitor, return_exceptions=True)
        return rate, worst[0]


def listener_cost(batches: int = 20000) -> float:
    """µs per observation that the page's listener adds to the ingest path."""
    from edge.web.state import LiveState

    streams = [Datastream("gw-bench", "flood", q) for q in QTYS]
    now = time.time_ns() // 1_000_000
    work = [[Observation(s, 1.0, now + i, PROV) for s in streams] for i in range(batches)]
    live = LiveState()
    t = time.perf_counter()
    for batch in work:
        live(batch)
    return (time.perf_counter() - t) / (batches * len(QTYS)) * 1e6


def a_day_of_history(gateway_id: str, sensor: str) -> list[Observation]:
    """One value a minute for 24 h per stream: the host page's charts at their largest."""
    now = time.time_ns() // 1_000_000
    return [Observation(Datastream(gateway_id, sensor, q), 10.0 + i % 7, now - i * 60_000, PROV)
            for i in range(24 * 60, 0, -1) for q in QTYS]


async def handler_costs(n: int = 50) -> tuple[dict[str, float], dict[str, int]]:
    """ms of event-loop time per request body, measured in-process on a flooded gateway
    whose page has a full day of history (1440 one-minute buckets per stream)."""
    from edge.web import metrics
    from edge.web.server import StatusServer

    with tempfile.TemporaryDirectory(prefix="bench-web-") as tmp:
        gw = Gateway(config(Path(tmp), free_port()), sources=[FloodSource("flood")],
                     uplinks=[SinkUplink()])
        stop = asyncio.Event()
        task = asyncio.create_task(gw.run(stop))
        await asyncio.sleep(1.0)
        server = StatusServer(gw, gw.config.settings(WebSettings))
        server.live(a_day_of_history("gw-bench", "flood"))
        view = server.view
        costs: dict[str, float] = {}
        sizes: dict[str, int] = {}
        for name, fragment in (("/ (host page)", False), ("/home/main (its refresh)", True)):
            t = time.perf_counter()
            for _ in range(n):
                view.buffer._at = -1e9
                body = server.home_page.render(await view.home_model(), "nl", fragment=fragment)
            costs[name] = (time.perf_counter() - t) / n * 1000
            sizes[name] = len(body.encode())
        for name, call in (
            ("/api/status", view.status), ("/healthz", view.health),
            ("/metrics", lambda: metrics.render(view, server.registry)),
        ):
            t = time.perf_counter()
            for _ in range(n):
                view.buffer._at = -1e9  # defeat the 1 s cache: worst case
                await call()
            costs[name] = (time.perf_counter() - t) / n * 1000
        t = time.perf_counter()
        for _ in range(n):
            view.latest()
            view.history()
        costs["/api/latest + /api/history"] = (time.perf_counter() - t) / n * 1000
        await server.close()
        stop.set()
        await task
        return costs, sizes


CASES = {"base": (False, 0.0), "idle": (True, 0.0), "1 Hz": (True, 1.0), "10 Hz": (True, 10.0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    rates: dict[str, list[float]] = {k: [] for k in CASES}
    lags: dict[str, list[float]] = {k: [] for k in CASES}
    names = list(CASES)
    for round_ in range(args.rounds):
        for name in names[round_ % len(names):] + names[: round_ % len(names)]:  # rotate order
            web, hz = CASES[name]
            rate, lag = asyncio.run(one_case(web, hz, args.seconds))
            rates[name].append(rate)
            lags[name].append(lag)
    base = statistics.median(rates["base"])
    print(f"ingest through the real Gateway + outbox, {args.seconds:.0f} s x {args.rounds} rounds per case")
    print(f"{'case':<7} {'obs/s':>10} {'vs base':>8} {'worst loop lag':>15}")
    for name in CASES:
        r = statistics.median(rates[name])
        print(f"{name:<7} {r:>10.0f} {r / base:>8.3f} {max(lags[name]) * 1000:>12.1f} ms")
    per_obs = 1e6 / base
    listener = listener_cost()
    print(f"\ningest path per observation (base): {per_obs:.2f} µs; the page's listener adds "
          f"{listener:.2f} µs ({listener / per_obs:.1%})")
    print("handler time per request (in-process, caches defeated, 24 h of history):")
    costs, sizes = asyncio.run(handler_costs())
    for path, ms in costs.items():
        size = f"  {sizes[path] / 1024:5.1f} KiB" if path in sizes else ""
        print(f"  {path:<28} {ms:6.2f} ms{size}")


if __name__ == "__main__":
    main()
