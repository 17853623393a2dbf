"""Detection quality of the quality stage on real data, beside a baseline from the same run.

    .venv/bin/python bench/bench_quality_eval.py [--json out.json] [--results DIR]

``--results DIR`` also writes the ASNX series in NAB's results layout (one CSV per series:
``timestamp,value,anomaly_score,label``, label 1 inside the anomaly windows), which
``duet-edge quality evaluate --results DIR`` scores to the same NAB numbers.

Every series goes through the real ``QualityStage`` (one batch per row holding all columns of
the row, as a gateway source hands them over). In the same loop a windowed-Gaussian detector
(``bench/quality_baselines.py``, window 1000) scores the same values. Printed, as markdown:

1. **ASNX** (``bench/data/asnx-wsn-faults``, MIT): 45 recordings with real fault signatures
   (labels: the data set's ``fault`` column, per column only the faults that changed it).
   NAB scores (``edge/quality/nab.py``, threshold swept over all series at once, per profile)
   for our anomaly score and the baseline's; event F1 on faults (a fault run is found when an
   alarm falls on it, the row before — the recorded signatures start one row before their
   label — or the row after; a false alarm is a run of alarms elsewhere, with 2 rows of
   grace after a fault) for the detector's alarm (``tests.anomaly``), for the gateway's
   aggregate flag (rules + detector), for the rules alone, and for the baseline at the
   threshold that maximises its own F1.
2. **UCI** (``calibration/data/AirQualityUCI.csv``): hourly CO and NO2 with 20 injected
   faults per kind (``edge/quality/faults.py``, seed 1 + kind index), same metrics.
3. **Clean real data**: the share of observations each rule flags on the clean UCI series
   (CO, NO2, T, RH) and the three ASNX base recordings, and on the real events in them
   (room airing, heavy rain; ``edge.quality.asnx.event_rows``).

NAB windows (our labelled series follow NAB's rule): each anomaly gets a window of
``10 % × rows / anomalies`` rows starting half of that before its first row (and reaching
at least its last row); overlapping windows merge.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from quality_baselines import WindowedGaussian

from edge.model import QC_SUSPECT, Datastream, Observation, Provenance
from edge.quality import asnx, nab, uci
from edge.quality.faults import inject
from edge.quality.settings import QualitySettings
from edge.quality.stage import QualityStage

ROOT = Path(__file__).parent / "data" / "asnx-wsn-faults"
PROV = Provenance(sensor_model="bench")
RULES = ("gross_range", "climatology", "spike", "rate_of_change", "flat_line", "pm_order",
         "pm_cf1", "colocated", "colocated_drift", "ml_anomaly")
UCI_KINDS = ("spike", "stuck", "noise", "offset", "drift_linear")


@dataclass
class Scored:
    """One column of one run: per row the anomaly score, alarm, flags (NaN/False: no value)."""

    name: str
    anomaly: np.ndarray
    alarm: np.ndarray
    aggregate: np.ndarray
    rules: np.ndarray  # any rule (not the detector) suspect or worse
    baseline: np.ndarray
    per_test: dict[str, np.ndarray] = field(default_factory=dict)


def run(name: str, times: np.ndarray, columns: dict[str, tuple[str, np.ndarray]],
        settings: QualitySettings) -> dict[str, Scored]:
    """All columns of a recording through one stage; the baseline beside it."""
    stage = QualityStage(settings)
    n = len(times)
    out = {c: Scored(f"{name}:{c}", np.full(n, np.nan), np.zeros(n, bool), np.zeros(n, np.int8),
                     np.zeros(n, bool), np.zeros(n)) for c in columns}
    base = {c: WindowedGaussian() for c in columns}
    streams = {c: Datastream("bench", c, q) for c, (q, _) in columns.items()}
    cols = [(c, streams[c], v.tolist()) for c, (_, v) in columns.items()]
    for i, t in enumerate(times.tolist()):
        batch = []
        for c, ds, values in cols:
            x = values[i]
            if x == x:
                batch.append((c, Observation(ds, x, t, PROV)))
                out[c].baseline[i] = base[c].update(x)
        stage.process([o for _, o in batch])
        for c, o in batch:
            q = o.quality
            if q is None:
                continue
            s = out[c]
            s.anomaly[i] = q.scores.get("anomaly", np.nan)
            s.alarm[i] = q.tests.get("anomaly") == QC_SUSPECT
            s.aggregate[i] = q.aggregate
            s.rules[i] = any(q.tests.get(r, 1) >= QC_SUSPECT for r in RULES)
            for test, flag in q.tests.items():
                if flag >= QC_SUSPECT and test != "gap":
                    s.per_test.setdefault(test, np.zeros(n, bool))[i] = True
    return out


def nab_windows(anomalies: list[tuple[int, int]], n: int) -> list[tuple[int, int]]:
    if not anomalies:
        return []
    width = max(1, int(0.1 * n / len(anomalies)))
    windows: list[tuple[int, int]] = []
    for start, end in sorted(anomalies):
        lo, hi = max(0, start - width // 2), min(n - 1, max(end, start + width // 2))
        if windows and lo <= windows[-1][1] + 1:
            windows[-1] = (windows[-1][0], max(windows[-1][1], hi))
        else:
            windows.append((lo, hi))
    return windows


@dataclass
class Events:
    found: int = 0
    missed: int = 0
    false: int = 0

    def add(self, alarms: np.ndarray, anomalies: list[tuple[int, int]]) -> None:
        near = np.zeros(len(alarms), bool)
        for a, b in anomalies:
            if alarms[max(0, a - 1) : b + 2].any():
                self.found += 1
            else:
                self.missed += 1
            near[max(0, a - 1) : b + 3] = True
        self.false += len(asnx.runs(alarms & ~near))

    @property
    def f1(self) -> float:
        p = self.found / (self.found + self.false) if self.found + self.false else 1.0
        r = self.found / (self.found + self.missed) if self.found + self.missed else 1.0
        return 2 * p * r / (p + r) if p + r else 0.0

    def row(self) -> str:
        return f"{self.found}/{self.found + self.missed} | {self.false} | {self.f1:.3f}"


def best_f1(items: list[tuple[np.ndarray, list[tuple[int, int]]]]) -> tuple[float, Events]:
    best = (1.0, Events(missed=1))
    for thr in [*np.round(np.arange(0.5, 1.0, 0.01), 2).tolist(), 0.999, 0.9999]:
        ev = Events()
        for scores, anomalies in items:
            ev.add(scores >= thr, anomalies)
        if ev.f1 > best[1].f1:
            best = (thr, ev)
    return best


def report(title: str, labelled: list[tuple[Scored, list[tuple[int, int]]]]) -> dict[str, object]:
    """NAB sweep and event F1 for one group of labelled series."""
    ours = [nab.LabelledScores(s.name, np.nan_to_num(s.anomaly), nab_windows(a, len(s.anomaly)))
            for s, a in labelled]
    theirs = [nab.LabelledScores(s.name, s.baseline, w.windows) for (s, _), w in
              zip(labelled, ours, strict=True)]
    result: dict[str, object] = {"series": len(labelled),
                                 "anomalies": sum(len(a) for _, a in labelled)}
    print(f"\n### {title}: {len(labelled)} series, {result['anomalies']} labelled anomalies\n")
    print("| detector | NAB standard | best threshold | reward low FP | reward low FN |")
    print("|---|---|---|---|---|")
    for label, items in (("anomaly score (ours)", ours), ("windowed Gaussian", theirs)):
        sweeps = {p: nab.sweep(items, p) for p in nab.PROFILES}
        std = sweeps["standard"]
        print(f"| {label} | {std.score:.1f} | {std.threshold:.3f} | "
              f"{sweeps['reward_low_FP_rate'].score:.1f} | "
              f"{sweeps['reward_low_FN_rate'].score:.1f} |")
        result[label] = {p: round(s.score, 2) for p, s in sweeps.items()}
    at_gateway = nab.sweep(ours, "standard", np.array([0.5]))
    print(f"| anomaly alarm at the gateway's threshold 0.5 | {at_gateway.score:.1f} | 0.5 | | |")
    result["nab_at_0.5"] = round(at_gateway.score, 2)
    print("\n| decision | faults found | false alarms | event F1 |\n|---|---|---|---|")
    rows: dict[str, Events] = {"detector alarm (tests.anomaly)": Events(),
                               "aggregate flag (rules + detector)": Events(),
                               "rules alone": Events()}
    for s, anomalies in labelled:
        rows["detector alarm (tests.anomaly)"].add(s.alarm, anomalies)
        rows["aggregate flag (rules + detector)"].add(s.aggregate >= QC_SUSPECT, anomalies)
        rows["rules alone"].add(s.rules, anomalies)
    thr, base = best_f1([(s.baseline, a) for s, a in labelled])
    rows[f"windowed Gaussian ≥ {thr} (its best F1)"] = base
    for label, ev in rows.items():
        print(f"| {label} | {ev.row()} |")
        result[label] = {"found": ev.found, "missed": ev.missed, "false": ev.false,
                         "f1": round(ev.f1, 4)}
    return result


def asnx_groups(settings: QualitySettings, results: Path | None) -> dict[str, object]:
    labelled = []
    for setting in asnx.SETTINGS:
        clean = asnx.base(ROOT, setting)
        for rec in asnx.faulty(ROOT, setting):
            cols = {c: (asnx.QUANTITY[c], v) for c, v in rec.values.items()}
            scored = run(rec.name, rec.times_ms, cols, settings)
            for c in rec.values:
                anomalies = asnx.fault_runs(rec, clean, c)
                labelled.append((scored[c], anomalies))
                if results is not None:
                    write_result(results / setting / f"{rec.name}-{c}.csv", rec.times_ms,
                                 rec.values[c], scored[c].anomaly,
                                 nab_windows(anomalies, len(rec.times_ms)))
    return report("ASNX faulty recordings", labelled)


def write_result(path: Path, times: np.ndarray, values: np.ndarray, scores: np.ndarray,
                 windows: list[tuple[int, int]]) -> None:
    """One series in NAB's results layout."""
    label = np.zeros(len(times), int)
    for a, b in windows:
        label[a : b + 1] = 1
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        fh.write("timestamp,value,anomaly_score,label\n")
        for t, v, s, lab in zip(times.tolist(), values.tolist(), scores.tolist(),
                                label.tolist(), strict=True):
            fh.write(f"{t},{v!r},{'' if s != s else f'{s:.3f}'},{lab}\n")


def uci_groups(settings: QualitySettings) -> dict[str, object]:
    data = uci.load()
    t = data.times_ms
    labelled = []
    per_kind: dict[str, list[tuple[Scored, list[tuple[int, int]]]]] = {}
    for code in ("co", "no2"):
        for k, kind in enumerate(UCI_KINDS):
            inj = inject(data.values[code], t, kind, 20, seed=1 + k, lo=int(0.15 * len(t)))
            cols = {code: (code, inj.values),
                    "temperature": ("temperature", data.values["temperature"]),
                    "humidity": ("humidity", data.values["humidity"])}
            scored = run(f"uci-{code}-{kind}", t, cols, settings)[code]
            item = (scored, [(e.start, e.end) for e in inj.events])
            labelled.append(item)
            per_kind.setdefault(kind, []).append(item)
    result = report("UCI hourly CO and NO2, injected faults", labelled)
    print("\n| fault kind | NAB standard (ours) | NAB standard (windowed Gaussian) "
          "| detector alarm: found, false, F1 |\n|---|---|---|---|")
    for kind, items in per_kind.items():
        ours = [nab.LabelledScores(s.name, np.nan_to_num(s.anomaly),
                                   nab_windows(a, len(s.anomaly))) for s, a in items]
        theirs = [nab.LabelledScores(s.name, s.baseline, w.windows)
                  for (s, _), w in zip(items, ours, strict=True)]
        ev = Events()
        for s, a in items:
            ev.add(s.alarm, a)
        print(f"| {kind} | {nab.sweep(ours).score:.1f} | {nab.sweep(theirs).score:.1f} | "
              f"{ev.row()} |")
    return result


def clean_rates(settings: QualitySettings) -> dict[str, object]:
    """Share of observations each rule flags on clean real data, and on the real events."""
    data = uci.load()
    runs: list[tuple[str, Scored, np.ndarray]] = []
    cols = {c: (c, data.values[c]) for c in ("co", "no2", "temperature", "humidity")}
    for c, s in run("uci", data.times_ms, cols, settings).items():
        runs.append((f"UCI {c}", s, np.zeros(len(s.anomaly), bool)))
    for setting in asnx.SETTINGS:
        rec = asnx.base(ROOT, setting)
        events = asnx.event_rows(rec)
        cols = {c: (asnx.QUANTITY[c], v) for c, v in rec.values.items()}
        for c, s in run(rec.name, rec.times_ms, cols, settings).items():
            runs.append((f"ASNX {setting} {c}", s, events))
    tests = ["gross_range", "spike", "rate_of_change", "flat_line", "anomaly"]
    tests += sorted({t for _, s, _ in runs for t in s.per_test} - set(tests))
    total = sum(int(np.isfinite(s.anomaly).sum()) for _, s, _ in runs)
    print(f"\n### Clean real data: {total} observations "
          f"({len(runs)} series: UCI, ASNX base recordings)\n")
    print(f"| series | values | {' | '.join(tests)} | aggregate |")
    print("|---|---|" + "---|" * (len(tests) + 1))
    result: dict[str, object] = {"observations": total}

    def hits(s: Scored, test: str) -> int:
        if test == "aggregate":
            return int((s.aggregate >= QC_SUSPECT).sum())
        return int(s.per_test.get(test, np.zeros(0, bool)).sum())

    for name, s, _ in runs:
        n = int(np.isfinite(s.anomaly).sum())
        cells = [f"{100 * hits(s, t) / n:.2f}" for t in [*tests, "aggregate"]]
        print(f"| {name} | {n} | {' | '.join(cells)} |")
    cells = []
    for test in [*tests, "aggregate"]:
        count = sum(hits(s, test) for _, s, _ in runs)
        cells.append(f"**{100 * count / total:.3f}**")
        result[test] = count
    print(f"| **all** (% of values) | {total} | {' | '.join(cells)} |")
    print("\n| real events (no faults) | observations | detector alarms | aggregate flags "
          "| events with an alarm |\n|---|---|---|---|---|")
    for label, setting in (("room airing (4 events)", "indoor_-_room_airing"),
                           ("heavy rain (day 5 on)", "outdoor_-_heavy_rain")):
        obs = alarms = flags = hit = events = 0
        for name, s, inside in runs:
            if setting not in name:
                continue
            obs += int(inside.sum())
            alarms += int((s.alarm & inside).sum())
            flags += int(((s.aggregate >= QC_SUSPECT) & inside).sum())
            for a, b in asnx.runs(inside):
                events += 1
                hit += bool(s.alarm[a : b + 1].any())
        print(f"| {label} | {obs} | {alarms} ({100 * alarms / obs:.2f} %) | "
              f"{flags} ({100 * flags / obs:.2f} %) | {hit} of {events} (event × column) |")
        result[label] = {"observations": obs, "alarms": alarms, "flags": flags,
                         "events_alarmed": hit, "events": events}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--results", type=Path, help="also write the ASNX series here, in "
                        "NAB's results layout")
    args = parser.parse_args()
    settings = QualitySettings.model_validate({"ml": {"enabled": False}})
    started = time.perf_counter()
    results = {"asnx": asnx_groups(settings, args.results), "uci": uci_groups(settings),
               "clean": clean_rates(settings)}
    print(f"\n({time.perf_counter() - started:.0f} s; settings: defaults, LiteRT model off)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
