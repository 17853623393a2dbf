"""The fault campaign's CI version (`python -m hil.chaos --short`): real Mosquitto, real
`duet-edge ingest` and `duet-edge run` on emulated sensors, killed, starved and fed garbage.
It fails if one observation the gateway committed is lost or duplicated — and the canary
proves the harness sees a real loss when there is one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROCESS_SCENARIOS = {
    "gateway-kill", "receiver-kill", "broker-kill-shared", "broker-kill-shared-nopersist",
    "broker-kill-plain", "broker-kill-plain-nopersist", "broker-outage", "disk-full",
    "storage-damage", "poison",
}


def campaign(tmp_path: Path, *args: str, timeout: float) -> tuple[int, dict[str, object]]:
    done = subprocess.run(
        [sys.executable, "-m", "hil.chaos", "--short", "--json", "--workdir",
         str(tmp_path / "chaos"), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False,
    )
    assert done.stdout.strip(), done.stderr[-3000:]
    report: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return done.returncode, report


@pytest.mark.timeout(300)
def test_short_campaign_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    code, report = campaign(tmp_path, timeout=280)
    scenarios = {s["name"]: s for s in report["scenarios"]}  # type: ignore[attr-defined]
    assert set(scenarios) >= PROCESS_SCENARIOS | {"fuzz-decoders", "fuzz-contract"}
    assert report["seconds"] < 120  # type: ignore[operator]
    failures = []
    for name, s in scenarios.items():
        if s["skipped"]:
            assert name == "disk-full", f"{name} skipped: {s['skipped']}"
            continue
        for t in s["tallies"]:
            if t["lost"] or t["duplicated"] or t["conflicts"]:
                failures.append(f"{name}: {t}")
        failures += [f"{name}: {p}" for p in s["problems"]]
        if name in PROCESS_SCENARIOS:  # never vacuous: the gateway committed, the twin stored
            (t,) = s["tallies"]
            assert t["committed"] > 500 and t["delivered"] == t["committed"] - sum(
                t["gap_covered"].values()) - t["refused"], f"{name}: {t}"
    assert not failures, "\n".join(failures)
    assert code == 0 and report["ok"]


@pytest.mark.timeout(180)
def test_the_harness_sees_a_real_loss(tmp_path: Path) -> None:
    """confirm = "broker" deletes rows on the broker's PUBACK: a broker without persistence
    killed while the twin's receiver is away loses them. The harness must say so and fail."""
    code, report = campaign(tmp_path, "--scenarios", "canary-broker-confirm", timeout=170)
    (scenario,) = report["scenarios"]  # type: ignore[misc]
    (t,) = scenario["tallies"]
    assert t["lost"] > 0 and t["lost_examples"], t
    assert t["delivered"] + t["lost"] == t["committed"]
    assert not scenario["ok"] and not report["ok"]
    assert code == 1


@pytest.mark.parametrize("args", [["--kills", "gateway=x"], ["--scenarios", "nope"],
                                  ["--seconds", "0"], ["--kills", "router=3"]])
def test_a_usage_mistake_is_one_line_and_exit_2(args: list[str]) -> None:
    done = subprocess.run([sys.executable, "-m", "hil.chaos", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("python -m hil.chaos: ")
