"""``python -m hil.chaos``: run the fault campaign and print committed / delivered / lost /
duplicated per scenario.

    python -m hil.chaos --short                       # the CI version (< 2 minutes)
    python -m hil.chaos --scenarios gateway-kill --kills 20 --seconds 60
    python -m hil.chaos --kills gateway=70,receiver=20,broker=12,storage=15 --seconds 300

Exit status: 0 nothing lost or duplicated and no other failure; 1 a scenario lost or
duplicated an observation or failed otherwise (a fuzz escape, a stalled receiver, a
traceback); 2 a usage error (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from hil.chaos.scenarios import KILL_KINDS, SCENARIOS, Context, Plan, Result, Scenario

USAGE_EXIT = 2
FOUND_EXIT = 1

@dataclass(frozen=True, slots=True)
class Defaults:
    seconds: float
    outage_s: float
    fuzz_n: int
    rate_hz: float
    kills: dict[str, int]
    jobs: int


FULL = Defaults(seconds=60.0, outage_s=30.0, fuzz_n=100_000, rate_hz=100.0, jobs=1,
                kills={"gateway": 10, "receiver": 5, "broker": 4, "storage": 5})
SHORT = Defaults(seconds=3.0, outage_s=3.0, fuzz_n=2_000, rate_hz=40.0, jobs=3,
                 kills={"gateway": 3, "receiver": 2, "broker": 1, "storage": 5})


class UsageError(Exception):
    pass


def parse_kills(text: str, defaults: dict[str, int]) -> dict[str, int]:
    """``N`` (every kind) or ``kind=N,...`` (the others keep their defaults)."""
    kills = dict(defaults)
    if text.isdigit():
        return dict.fromkeys(kills, int(text))
    for item in text.split(","):
        kind, _, count = item.partition("=")
        if kind.strip() not in KILL_KINDS or not count.strip().isdigit():
            raise UsageError(f"--kills {text!r}: expected N or kind=N,… with kinds "
                             f"{', '.join(KILL_KINDS)} (e.g. gateway=70,broker=12)")
        kills[kind.strip()] = int(count)
    return kills


def pick(names: str | None) -> list[Scenario]:
    if not names:
        return [s for s in SCENARIOS if s.default]
    known = {s.name: s for s in SCENARIOS}
    chosen = []
    for name in (n.strip() for n in names.split(",") if n.strip()):
        if name not in known:
            raise UsageError(f"--scenarios: unknown scenario {name!r}; known: "
                             f"{', '.join(known)}")
        chosen.append(known[name])
    return chosen


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hil.chaos", description=__doc__.splitlines()[0],
        epilog="scenarios: " + "; ".join(f"{s.name} ({s.summary})" for s in SCENARIOS))
    parser.add_argument("--scenarios", help="comma-separated names (default: all but canaries)")
    parser.add_argument("--kills", help="faults per scenario: N, or kind=N,… "
                        f"({', '.join(KILL_KINDS)})")
    parser.add_argument("--seconds", type=float, help="length of each scenario's fault phase")
    parser.add_argument("--outage", type=float, help="broker outage in seconds")
    parser.add_argument("--fuzz-n", type=int, help="fuzzed inputs per decoder / contract kind")
    parser.add_argument("--rate", type=float,
                        help="frames/s of each emulated SDS011 (3 SDS011 + 1 PMS5003 at 0.4×: "
                        "≈ 10.8 × rate observations/s)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--durability", choices=("normal", "full"), default="normal",
                        help="the gateways' [buffer] durability (default normal)")
    parser.add_argument("--jobs", type=int,
                        help="scenarios run side by side (default 1; --short: 3)")
    parser.add_argument("--short", action="store_true",
                        help="the CI version: seconds per scenario, few faults")
    parser.add_argument("--workdir", type=Path, help="keep every log, store and ledger here")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    return parser


def make_plan(args: argparse.Namespace) -> Plan:
    base = SHORT if args.short else FULL
    kills = parse_kills(args.kills, base.kills) if args.kills else dict(base.kills)
    for value, what in ((args.seconds, "--seconds"), (args.outage, "--outage"),
                        (args.rate, "--rate"), (args.fuzz_n, "--fuzz-n"),
                        (args.jobs, "--jobs")):
        if value is not None and value <= 0:
            raise UsageError(f"{what} must be > 0")
    if args.workdir is not None and args.workdir.is_dir() and any(args.workdir.iterdir()):
        # a scenario would find the stores, journals and ledgers of an earlier run
        raise UsageError(f"--workdir {args.workdir} is not empty: give a new or empty folder")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="duet-chaos-"))
    workdir.mkdir(parents=True, exist_ok=True)
    return Plan(
        seconds=args.seconds or base.seconds,
        kills=kills,
        outage_s=args.outage or base.outage_s,
        fuzz_n=args.fuzz_n or base.fuzz_n,
        rate_hz=args.rate or base.rate_hz,
        seed=args.seed,
        workdir=workdir,
        jobs=args.jobs or base.jobs,
        durability=args.durability,
    )


def run_one(plan: Plan, scenario: Scenario, index: int, log: bool) -> Result:
    ctx = Context(plan, scenario.name, index)
    t0 = time.monotonic()
    if log:
        print(f"… {scenario.name}: {scenario.summary}", file=sys.stderr, flush=True)
    try:
        scenario.run(ctx)
    except Exception as exc:  # the harness's own failure: report it, keep going
        ctx.result.problems.append(f"harness error: {type(exc).__name__}: {exc}")
        traceback.print_exc(file=sys.stderr)
    ctx.result.seconds = time.monotonic() - t0
    return ctx.result


def format_table(results: list[Result]) -> str:
    head = (f"{'scenario':30} {'committed':>10} {'delivered':>10} {'lost':>6} {'dup':>5} "
            f"{'refused':>7}  {'gaps announced (committed obs covered)':40} {'s':>5}  result")
    lines = [head, "-" * len(head)]
    for r in results:
        verdict = "skipped" if r.skipped else ("ok" if r.ok else "FAIL")
        if not r.tallies:
            lines.append(f"{r.name:30} {'':>10} {'':>10} {'':>6} {'':>5} {'':>7}  {'':40} "
                         f"{r.seconds:5.0f}  {verdict}")
        for t in r.tallies:
            gaps = ", ".join(f"{reason} ×{n} ({t.gap_covered.get(reason, 0)})"
                             for reason, n in sorted(t.gaps_announced.items())) or "none"
            lines.append(f"{r.name:30} {t.committed:10,d} {t.delivered:10,d} {t.lost:6,d} "
                         f"{t.duplicated:5,d} {t.refused:7,d}  {gaps:40} {r.seconds:5.0f}  "
                         f"{verdict}")
        for fault in r.faults:
            lines.append(f"    fault: {fault}")
        if r.skipped:
            lines.append(f"    skipped: {r.skipped}")
        for key, value in r.figures.items():
            lines.append(f"    {key}: {json.dumps(value, separators=(', ', ': '))}")
        for t in r.tallies:
            if t.conflicts:
                lines.append(f"    {t.conflicts} numbers stored with other content (reused)")
            if t.lost_examples:
                lines.append(f"    lost, e.g. seq {t.lost_examples}")
            if t.untapped:
                lines.append(f"    {t.untapped} stored rows the tap never saw committed")
        lines += [f"    note: {n}" for n in r.notes]
        lines += [f"    PROBLEM: {p}" for p in r.problems]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        scenarios = pick(args.scenarios)
        plan = make_plan(args)
    except UsageError as exc:
        print(f"python -m hil.chaos: {exc}", file=sys.stderr)
        return USAGE_EXIT
    started = time.monotonic()
    with ThreadPoolExecutor(plan.jobs) as pool:  # each scenario has its own processes and ports
        results = list(pool.map(lambda item: run_one(plan, item[1], item[0], not args.json),
                                enumerate(scenarios)))
    failed = [r for r in results if not r.ok and not r.skipped]
    if args.json:
        print(json.dumps({"plan": {"seconds": plan.seconds, "kills": plan.kills,
                                   "outage_s": plan.outage_s, "fuzz_n": plan.fuzz_n,
                                   "rate_hz": plan.rate_hz, "seed": plan.seed,
                                   "jobs": plan.jobs, "durability": plan.durability,
                                   "workdir": str(plan.workdir)},
                          "ok": not failed, "seconds": round(time.monotonic() - started, 1),
                          "scenarios": [r.as_dict() for r in results]}))
    else:
        print(format_table(results))
        print(f"{len(results)} scenarios in {time.monotonic() - started:.0f} s; "
              f"{len(failed)} failed; logs in {plan.workdir}")
    if not failed and args.workdir is None:
        shutil.rmtree(plan.workdir, ignore_errors=True)
    return FOUND_EXIT if failed else 0


if __name__ == "__main__":
    sys.exit(main())
