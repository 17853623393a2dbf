"""Fault-injection evaluation of the quality stage on a real base signal.

The real :class:`~edge.quality.stage.QualityStage` runs over observations built from the
series (one batch per timestamp, in time order), once per fault type, for each entry of
``DETECTORS``: the rules alone, the rules with the learned anomaly detector, and both with the
LiteRT model. Scores are per fault type:

- event level: an event is detected when any observation inside it is flagged (aggregate
  ≥ 3; for dropouts, the ``gap`` test on the first value after the gap); a false alarm is a
  cluster of flagged observations outside every event (flags within a grace period after an
  event, while detectors recover, are ignored); detection delay is onset → first flag;
  a flag inside an event counts only where the same run on clean data did not flag, so
  background false flags do not pass for detections of long events;
- point level: precision/recall over observations;
- clean data: the share of observations flagged when nothing was injected.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edge.model import QC_SUSPECT, Datastream, Observation, Provenance
from edge.quality.faults import FAULT_TYPES, FaultEvent, inject
from edge.quality.settings import ColocatedPair, MlSettings, QualitySettings
from edge.quality.stage import QualityStage
from edge.quality.train import Series

SENSOR = "aq1"
TWIN = "aq2"
_CLUSTER_GAP = 3  # flagged samples closer than this form one false alarm
# (label, learned anomaly detector on, LiteRT model on)
DETECTORS = (("rules", False, False), ("rules+anomaly", True, False),
             ("rules+anomaly+model", True, True))


@dataclass
class FaultScore:
    kind: str
    events: int
    detected: int
    false_alarms: int
    event_precision: float
    event_recall: float
    event_f1: float
    point_precision: float
    point_recall: float
    point_f1: float
    delay_h_median: float | None
    delay_h_max: float | None


@dataclass
class EvalReport:
    quantity: str
    rows: int
    first_index: int
    seed: int
    events_per_type: int
    twin_noise: float
    ml_status: str
    clean_false_flag_rate: dict[str, float] = field(default_factory=dict)
    results: dict[str, dict[str, FaultScore]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def eval_settings(quantity: str, twin: bool, ml: bool, model_dir: Path | None,
                  base: QualitySettings | None = None, anomaly: bool = True) -> QualitySettings:
    """``base`` (default thresholds if None), plus the co-located twin pair if simulated;
    the learned detector on or off (``anomaly``), the LiteRT model on or off (``ml``)."""
    base = base or QualitySettings.model_validate({})
    pairs = list(base.colocated)
    if twin:
        tol = _pair_tolerance(quantity)
        pairs.append(ColocatedPair.model_validate({
            "sensor_a": SENSOR, "sensor_b": TWIN, "quantity": quantity,
            "abs_tolerance": tol, "rel_tolerance": 0.7, "ratio_floor": tol,
        }))
    return base.model_copy(
        update={"colocated": pairs,
                "anomaly": base.anomaly.model_copy(update={"enabled": anomaly}),
                "ml": MlSettings.model_validate(
                    {"enabled": ml, "model_dir": model_dir or base.ml.model_dir})}
    )


def _pair_tolerance(quantity: str) -> float:
    return {"co": 0.3, "no2": 10.0}.get(quantity, 5.0)


StreamKey = tuple[str, str]


@dataclass
class StageRun:
    """Per stream, one entry per row: aggregate flag, gap flag, anomaly score (NaN: no value)."""

    aggregate: dict[StreamKey, np.ndarray]
    gap: dict[StreamKey, np.ndarray]
    anomaly: dict[StreamKey, np.ndarray]
    ml_status: str


def run_stage(
    settings: QualitySettings, times_ms: np.ndarray, streams: dict[StreamKey, np.ndarray]
) -> StageRun:
    """Feed the series through a fresh stage (one batch per row, NaN values left out)."""
    stage = QualityStage(settings)
    prov = Provenance(sensor_model="uci-airquality")
    ds = {key: Datastream("eval", key[0], key[1]) for key in streams}
    agg = {key: np.zeros(len(times_ms), np.int8) for key in streams}
    gap = {key: np.zeros(len(times_ms), bool) for key in streams}
    anomaly = {key: np.full(len(times_ms), np.nan) for key in streams}
    cols = [(key, ds[key], v.tolist()) for key, v in streams.items()]
    for i, t in enumerate(times_ms.tolist()):
        batch: list[Observation] = []
        keys = []
        for key, stream, values in cols:
            x = values[i]
            if x == x:  # not NaN
                batch.append(Observation(stream, x, t, prov))
                keys.append(key)
        stage.process(batch)
        for key, obs in zip(keys, batch, strict=True):
            q = obs.quality
            if q is not None:
                agg[key][i] = q.aggregate
                gap[key][i] = q.tests.get("gap") == 9
                anomaly[key][i] = q.scores.get("anomaly", np.nan)
    return StageRun(agg, gap, anomaly, stage.ml_status)


def score_events(kind: str, events: list[FaultEvent], flagged: np.ndarray,
                 observed: np.ndarray, times_ms: np.ndarray, lo: int,
                 background: np.ndarray | None = None) -> FaultScore:
    """Score one fault type. ``background``: flags of the same run on clean data; a flag
    inside an event only counts as its detection when the clean run did not flag there."""
    n = len(flagged)
    label = np.zeros(n, bool)
    ignore = np.zeros(n, bool)
    detected = 0
    delays: list[float] = []
    for ev in events:
        label[ev.start : ev.end + 1] = True
        length = ev.end - ev.start + 1
        grace = length if kind.startswith(("drift", "offset")) else _CLUSTER_GAP
        ignore[ev.end + 1 : ev.end + 1 + grace] = True
        inside = flagged[ev.start : ev.end + 1]
        if background is not None and kind != "dropout":
            inside = inside & ~background[ev.start : ev.end + 1]
        hits = np.flatnonzero(inside)
        if len(hits):
            detected += 1
            delays.append(float(times_ms[ev.start + hits[0]] - times_ms[ev.start]) / 3.6e6)
    region = np.zeros(n, bool)
    region[lo:] = True
    outside = flagged & ~label & ~ignore & region
    if kind == "dropout" and background is not None:
        outside &= ~background  # gaps that are in the real data are real gaps
    false_alarms = _clusters(np.flatnonzero(outside))
    ev_p = detected / (detected + false_alarms) if detected + false_alarms else 1.0
    ev_r = detected / len(events) if events else 1.0
    pts_label = label & observed
    tp = int(np.sum(flagged & pts_label))
    fp = int(np.sum(outside))
    pt_p = tp / (tp + fp) if tp + fp else 1.0
    pt_r = tp / int(pts_label.sum()) if pts_label.any() else 1.0
    return FaultScore(
        kind=kind, events=len(events), detected=detected, false_alarms=false_alarms,
        event_precision=round(ev_p, 4), event_recall=round(ev_r, 4), event_f1=_f1(ev_p, ev_r),
        point_precision=round(pt_p, 4), point_recall=round(pt_r, 4), point_f1=_f1(pt_p, pt_r),
        delay_h_median=round(float(np.median(delays)), 2) if delays else None,
        delay_h_max=round(max(delays), 2) if delays else None,
    )


def _f1(p: float, r: float) -> float:
    return round(2 * p * r / (p + r), 4) if p + r else 0.0


def _clusters(idx: np.ndarray) -> int:
    if len(idx) == 0:
        return 0
    return int(1 + np.sum(np.diff(idx) > _CLUSTER_GAP))


def evaluate(
    series: Series,
    quantity: str = "co",
    co_features: tuple[str, ...] = ("temperature", "humidity"),
    n_events: int = 20,
    seed: int = 1,
    twin_noise: float = 0.03,
    first_fraction: float = 0.35,
    model_dir: Path | None = None,
    kinds: tuple[str, ...] = FAULT_TYPES,
    settings: QualitySettings | None = None,
) -> EvalReport:
    """Inject each fault type into ``quantity`` of sensor aq1; score each of ``DETECTORS``.

    Only indices from ``first_fraction`` on are used (the model's training and validation
    data come before). With ``twin_noise > 0`` a co-located twin sensor is simulated as the
    clean series times log-normal noise of that standard deviation.
    """
    times = series.times_ms
    clean = series.values[quantity]
    lo = int(len(times) * first_fraction)
    rng = np.random.default_rng(seed + 1000)
    base: dict[tuple[str, str], np.ndarray] = {
        (SENSOR, f): series.values[f] for f in co_features
    }
    if twin_noise > 0:
        base[(TWIN, quantity)] = clean * np.exp(rng.normal(0.0, twin_noise, len(clean)))
    report = EvalReport(quantity=quantity, rows=len(times), first_index=lo, seed=seed,
                        events_per_type=n_events, twin_noise=twin_noise, ml_status="")
    key = (SENSOR, quantity)
    for label, use_anomaly, use_ml in DETECTORS:
        run_settings = eval_settings(quantity, twin_noise > 0, use_ml, model_dir, settings,
                                     anomaly=use_anomaly)
        run = run_stage(run_settings, times, {**base, key: clean})
        if use_ml:
            report.ml_status = run.ml_status
        observed = np.isfinite(clean)
        region = observed.copy()
        region[:lo] = False
        background = run.aggregate[key] >= QC_SUSPECT
        background_gaps = run.gap[key]
        report.clean_false_flag_rate[label] = round(
            float(np.sum(background & region) / max(1, region.sum())), 5
        )
        report.results[label] = {}
        for k, kind in enumerate(kinds):
            inj = inject(clean, times, kind, n_events, seed + k, lo=lo)
            faulty = run_stage(run_settings, times, {**base, key: inj.values})
            flagged = faulty.gap[key] if kind == "dropout" else faulty.aggregate[key] >= QC_SUSPECT
            report.results[label][kind] = score_events(
                kind, inj.events, flagged, np.isfinite(inj.values), times, lo,
                background_gaps if kind == "dropout" else background,
            )
    return report


def format_report(report: EvalReport) -> str:
    """Markdown tables, as pasted into docs/quality.md."""
    lines = [
        f"quantity `{report.quantity}`, {report.events_per_type} events per fault type, "
        f"seed {report.seed}, co-located twin noise {report.twin_noise}, "
        f"evaluated from row {report.first_index} of {report.rows}; ML: {report.ml_status}",
        "",
        "| detector | fault | events | detected | false alarms | event P | event R | event F1 "
        "| point P | point R | point F1 | delay median h | delay max h |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, results in report.results.items():
        for kind, s in results.items():
            lines.append(
                f"| {label} | {kind} | {s.events} | {s.detected} | {s.false_alarms} | "
                f"{s.event_precision:.3f} | {s.event_recall:.3f} | {s.event_f1:.3f} | "
                f"{s.point_precision:.3f} | {s.point_recall:.3f} | {s.point_f1:.3f} | "
                f"{_fmt(s.delay_h_median)} | {_fmt(s.delay_h_max)} |"
            )
    lines += ["", "| detector | false flags on clean data |", "|---|---|"]
    for label, rate in report.clean_false_flag_rate.items():
        lines.append(f"| {label} | {rate * 100:.2f} % |")
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.1f}"
