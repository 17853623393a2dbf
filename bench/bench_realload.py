"""Real load: the real `duet-edge run` with 10 emulated SDS011 at 1 Hz, for minutes.

Run (CI never does; it takes --minutes plus ~1 minute):

    .venv/bin/python bench/bench_realload.py --minutes 5

Starts one local Mosquitto, the twin receiver (`duet-edge ingest`) and a subscriber that
counts MQTT payload bytes per gateway on the broker side; then, side by side, one gateway
process per combination of

* code: this tree ("ours") and the previous design (``--baseline-rev``, default the commit
  this branch left main at, unpacked with ``git archive`` into a temporary directory and run
  from there with the same virtual environment);
* scenario: ``online`` (broker up) and ``offline`` (the uplink points at a closed port);
* durability: ``normal`` and ``full``;

each reading its own 10 emulated SDS011 (2 observations a second each: 20 obs/s). After a
warm-up it measures, over the window, per gateway process: disk bytes written per observation
(``write_bytes`` of /proc/<pid>/io; ``cancelled_write_bytes`` shown beside it), MQTT payload
bytes per observation (online), peak RSS and CPU. Observations counted: online, those the
subscriber saw published in the window; offline, the rise of the outbox's last sequence number.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import bench.bench_spine as spine  # noqa: E402
from edge.contract import decode_batch  # noqa: E402
from edge.outbox import summarize  # noqa: E402
from hil.emulators import EMULATORS  # noqa: E402

N_SENSORS = 10
WARMUP_S = 20.0


class WireCounter:
    """A subscriber on the broker: MQTT payload bytes and observations per gateway."""

    def __init__(self, port: int) -> None:
        import paho.mqtt.client as mqtt

        self.bytes: dict[str, int] = {}
        self.obs: dict[str, int] = {}
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-wire")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("duet/v1/+/obs", qos=1)
        self.client.loop_start()

    def _on_message(self, _c: object, _u: object, msg: object) -> None:
        topic: str = msg.topic  # type: ignore[attr-defined]
        payload: bytes = msg.payload  # type: ignore[attr-defined]
        gw = topic.split("/")[2]
        try:
            n = len(decode_batch(payload).observations)
        except Exception:
            n = 0
        with self.lock:
            self.bytes[gw] = self.bytes.get(gw, 0) + len(payload)
            self.obs[gw] = self.obs.get(gw, 0) + n

    def snapshot(self) -> tuple[dict[str, int], dict[str, int]]:
        with self.lock:
            return dict(self.bytes), dict(self.obs)

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@dataclass
class Run:
    code: str
    tree: Path
    scenario: str
    durability: str
    data: Path
    proc: subprocess.Popen[bytes] | None = None
    emulators: list[object] = field(default_factory=list)
    start: dict[str, float] = field(default_factory=dict)
    result: dict[str, float | str] = field(default_factory=dict)

    @property
    def gateway_id(self) -> str:
        return f"gw-{self.code}-{self.scenario}-{self.durability}"


def proc_io(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        key, value = line.split(":")
        out[key] = int(value)
    return out


def last_seq(run: Run) -> int:
    try:
        return summarize(run.data / "outbox.db", ["mqtt"]).last_seq
    except Exception:
        return 0


def start_gateway(run: Run, broker_port: int, dead_port: int, quality: bool, tmp: Path) -> None:
    emulator = EMULATORS["sds011"]
    link_dir = tmp / f"tty-{run.gateway_id}"
    link_dir.mkdir()
    run.emulators = [
        emulator(link_path=link_dir / f"tty{i}", interval_s=1.0, seed=i).start()
        for i in range(N_SENSORS)
    ]
    port = broker_port if run.scenario == "online" else dead_port
    lines = [
        "[gateway]", f'id = "{run.gateway_id}"', f'data_dir = "{run.data}"', "",
        "[buffer]", f'durability = "{run.durability}"', "",
        "[uplinks.mqtt]", f"port = {port}", "",
        "[log]", 'level = "WARNING"', "",
    ]
    if quality:
        lines += ["[quality]", ""]
    for i, emu in enumerate(run.emulators):
        lines += ["[[sources]]", f'name = "sds{i}"', 'type = "sds011"',
                  f'port = "{emu.port}"', "options = { warmup_s = 0 }", ""]  # type: ignore[attr-defined]
    cfg = tmp / f"{run.gateway_id}.toml"
    cfg.write_text("\n".join(lines))
    code = (f"import sys; sys.path.insert(0, {str(run.tree)!r}); "
            "import edge; assert edge.__file__.startswith(sys.path[0]), edge.__file__; "
            "from edge.cli import main; main()")
    env = dict(os.environ, PYTHONPATH=str(run.tree))
    log = open(tmp / f"{run.gateway_id}.log", "wb")  # noqa: SIM115 - lives as long as the process
    run.proc = subprocess.Popen([sys.executable, "-c", code, "run", str(cfg)], cwd=run.tree,
                                env=env, stdout=log, stderr=subprocess.STDOUT)


def sample(run: Run, wire: WireCounter) -> dict[str, float]:
    assert run.proc is not None
    pid = run.proc.pid
    io = proc_io(pid)
    wire_bytes, wire_obs = wire.snapshot()
    return {
        "t": time.monotonic(),
        "write_bytes": io["write_bytes"],
        "cancelled": io["cancelled_write_bytes"],
        "cpu": spine._cpu_seconds(pid),
        "wire_bytes": wire_bytes.get(run.gateway_id, 0),
        "wire_obs": wire_obs.get(run.gateway_id, 0),
        "last_seq": last_seq(run),
    }


def finish(run: Run, end: dict[str, float], tmp: Path) -> None:
    s = run.start
    assert run.proc is not None
    if run.proc.poll() is not None:  # died: say why instead of printing zeros
        tail = (tmp / f"{run.gateway_id}.log").read_text(errors="replace")[-1500:]
        print(f"{run.gateway_id} exited with {run.proc.returncode}:\n{tail}", file=sys.stderr)
        return
    seconds = end["t"] - s["t"]
    if run.scenario == "online":
        n_obs = end["wire_obs"] - s["wire_obs"]
    else:
        n_obs = end["last_seq"] - s["last_seq"]
    n = max(n_obs, 1)
    run.result = {
        "code": run.code,
        "scenario": run.scenario,
        "durability": run.durability,
        "observations": n_obs,
        "expected": round(seconds * N_SENSORS * 2),
        "disk_bytes_per_obs": round((end["write_bytes"] - s["write_bytes"]) / n, 1),
        "cancelled_bytes_per_obs": round((end["cancelled"] - s["cancelled"]) / n, 1),
        "wire_bytes_per_obs": round((end["wire_bytes"] - s["wire_bytes"]) / n, 1)
        if run.scenario == "online" else "",
        "cpu_percent_of_one_core": round((end["cpu"] - s["cpu"]) / seconds * 100, 2),
        "peak_rss_mb": round(spine._status_kib(run.proc.pid, "VmHWM") / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--baseline-rev", default=None,
                        help="git revision of the previous design (default: where this branch "
                        "left main, `git merge-base HEAD main`; '' to skip it)")
    parser.add_argument("--scenarios", default="online,offline")
    parser.add_argument("--durability", default="normal,full")
    parser.add_argument("--quality", action="store_true", help="turn the quality stage on")
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-realload-"))
    broker, port = spine._mosquitto(tmp)
    receiver = subprocess.Popen(
        [sys.executable, "-c", "from edge.cli import main; main()", "ingest", "--port", str(port),
         "--store", str(tmp / "twin.db")],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    wire = WireCounter(port)
    dead_port = spine._free_port()
    trees = [("ours", ROOT)]
    rev = spine.previous_rev() if args.baseline_rev is None else args.baseline_rev
    if rev:
        trees.append(("previous", spine._previous_tree(rev)))
    runs = [
        Run(code, tree, scenario, durability, tmp / f"data-{code}-{scenario}-{durability}")
        for code, tree in trees
        for scenario in args.scenarios.split(",")
        for durability in args.durability.split(",")
    ]
    try:
        for run in runs:
            start_gateway(run, port, dead_port, args.quality, tmp)
        time.sleep(WARMUP_S)
        for run in runs:
            if run.proc is not None and run.proc.poll() is not None:
                log_tail = (tmp / f"{run.gateway_id}.log").read_text(errors="replace")[-1500:]
                raise RuntimeError(f"{run.gateway_id} did not start:\n{log_tail}")
            run.start = sample(run, wire)
        time.sleep(args.minutes * 60)
        for run in runs:
            finish(run, sample(run, wire), tmp)
    finally:
        for run in runs:
            if run.proc is not None:
                run.proc.terminate()
        for run in runs:
            if run.proc is not None:
                try:
                    run.proc.wait(30)
                except subprocess.TimeoutExpired:
                    run.proc.kill()
            for emu in run.emulators:
                emu.stop()  # type: ignore[attr-defined]
        wire.stop()
        receiver.terminate()
        receiver.wait(10)
        broker.terminate()
        broker.wait(5)
    results = [run.result for run in runs if run.result]
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        keys = list(results[0]) if results else []
        print(" | ".join(keys))
        for r in results:
            print(" | ".join(str(r[k]) for k in keys))
    shutil.rmtree(tmp, ignore_errors=True)
    for code, tree in trees:
        if code == "previous":
            shutil.rmtree(tree, ignore_errors=True)


if __name__ == "__main__":
    main()
