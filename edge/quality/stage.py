"""The quality pipeline stage: rules + TinyML, between calibration and the outbox."""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable
from datetime import UTC, datetime

from edge.model import (
    QC_FAIL,
    QC_NOT_EVALUATED,
    QC_PASS,
    QC_SUSPECT,
    Datastream,
    Observation,
    Quality,
    aggregate_flag,
)
from edge.quality.ml import LiteRtScorer, MlUnavailable, ModelArtefact, WindowFeatures, discover
from edge.quality.rules import PairState, StreamRules
from edge.quality.settings import QualitySettings
from edge.seams import StateStore

log = logging.getLogger(__name__)

PM_ORDER = ("pm1", "pm2_5", "pm10")
PM_CF1 = {"pm1": "pm1_cf1", "pm2_5": "pm2_5_cf1", "pm10": "pm10_cf1"}
_PM_CODES = frozenset((*PM_ORDER, *PM_CF1.values()))

Scorer = Callable[[ModelArtefact], LiteRtScorer]


def _finite(value: object) -> bool:
    return isinstance(value, float | int) and math.isfinite(value)


class _Month:
    """Cache of the UTC month containing the last timestamp asked about."""

    __slots__ = ("end", "month", "start")

    def __init__(self) -> None:
        self.start = 0
        self.end = -1
        self.month = 1

    def of(self, ms: int) -> int:
        if self.start <= ms < self.end:
            return self.month
        t = datetime.fromtimestamp(ms / 1000.0, UTC)
        first = t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        nxt = first.replace(year=first.year + 1, month=1) if first.month == 12 else first.replace(
            month=first.month + 1
        )
        self.start = int(first.timestamp() * 1000)
        self.end = int(nxt.timestamp() * 1000)
        self.month = first.month
        return self.month


class _MlStream:
    __slots__ = ("co_keys", "features", "last_ok", "max_dt_ms", "min_dt_ms", "scorer",
                 "threshold", "warned")

    def __init__(self, scorer: LiteRtScorer, sensor_id: str) -> None:
        art = scorer.artefact
        self.scorer = scorer
        self.features = WindowFeatures(art)
        self.threshold = art.threshold
        self.co_keys = [(sensor_id, code) for code in art.co_features]
        self.last_ok = math.nan
        period = art.sample_period_s
        self.min_dt_ms = 0.0 if period is None else period * 1000.0 / 2.0
        self.max_dt_ms = math.inf if period is None else period * 1000.0 * 2.0
        self.warned = False


class _Stream:
    __slots__ = ("clim", "ml", "pairs", "rules")

    def __init__(self, rules: StreamRules, ml: _MlStream | None,
                 pairs: list[tuple[PairState, bool]]) -> None:
        self.rules = rules
        self.clim = rules.has_climatology
        self.ml = ml
        self.pairs = pairs


class QualityStage:
    """``process(observations)`` flags observations in arrival order (never raises on data).

    Per-datastream state is a few floats, a ``spike_window`` ring buffer and, for quantities
    with an anomaly model, one feature row. ML availability is decided once at construction:
    if the runtime or a model is missing, that is logged once and ``ml_anomaly`` is 2.
    """

    name = "quality"

    def open(self, state: StateStore) -> None:
        """The rule state is rebuilt from the stream within minutes; nothing to restore yet."""
        del state

    def close(self) -> None:
        """Nothing to checkpoint yet."""

    def __init__(self, settings: QualitySettings, scorer_factory: Scorer | None = None) -> None:
        self.settings = settings
        self._streams: dict[Datastream, _Stream] = {}
        self._latest: dict[tuple[str, str], float] = {}
        self._pairs = [PairState(p) for p in settings.colocated]
        self._month = _Month()
        self._failed_streams: set[Datastream] = set()
        self.ml_status = "disabled"
        self._scorers: dict[str, LiteRtScorer] = {}
        self._co_codes: frozenset[str] = frozenset()
        if settings.enabled and settings.ml.enabled:
            self._load_models(scorer_factory or LiteRtScorer)

    def _load_models(self, factory: Scorer) -> None:
        try:
            artefacts = discover(self.settings.ml.model_dir)
            if not artefacts:
                where = self.settings.ml.model_dir or "the shipped model folder"
                raise MlUnavailable(f"no anomaly model found in {where}")
            for art in artefacts:
                self._scorers[art.quantity] = factory(art)
        except (MlUnavailable, OSError, ValueError, KeyError) as exc:
            self._scorers.clear()
            self.ml_status = f"unavailable: {exc}"
            log.warning("quality: anomaly detection off, rule-based checks only (%s)", exc)
            return
        self._co_codes = frozenset(c for s in self._scorers.values() for c in
                                   s.artefact.co_features)
        names = ", ".join(f"{s.artefact.name}@{s.artefact.version}" for s in
                          self._scorers.values())
        self.ml_status = f"ok: {names}"
        log.info("quality: anomaly models loaded: %s", names)

    def _stream(self, ds: Datastream) -> _Stream:
        rules = StreamRules(self.settings.thresholds(ds.quantity_code))
        scorer = self._scorers.get(ds.quantity_code)
        ml = _MlStream(scorer, ds.sensor_id) if scorer is not None else None
        pairs = []
        for pair in self._pairs:
            if pair.cfg.quantity == ds.quantity_code:
                if pair.cfg.sensor_a == ds.sensor_id:
                    pairs.append((pair, True))
                elif pair.cfg.sensor_b == ds.sensor_id:
                    pairs.append((pair, False))
        state = _Stream(rules, ml, pairs)
        self._streams[ds] = state
        return state

    def process(self, observations: list[Observation]) -> list[Observation]:
        if not self.settings.enabled:
            return observations
        pm_groups: dict[tuple[str, int], dict[str, Observation]] | None = None
        for obs in observations:
            try:
                self._one(obs)
            except Exception:  # never let one bad value stop the gateway
                self._internal_error(obs)
            if obs.stream.quantity_code in _PM_CODES:
                if pm_groups is None:
                    pm_groups = {}
                key = (obs.stream.sensor_id, obs.phenomenon_ms)
                pm_groups.setdefault(key, {})[obs.stream.quantity_code] = obs
        if pm_groups:
            for group in pm_groups.values():
                try:
                    self._pm_checks(group)
                except Exception:
                    for obs in group.values():
                        self._internal_error(obs)
        return observations

    def _one(self, obs: Observation) -> None:
        ds = obs.stream
        state = self._streams.get(ds)
        if state is None:
            state = self._stream(ds)
        try:
            x = float(obs.result)
        except (TypeError, ValueError):
            x = math.nan
        ms = obs.phenomenon_ms
        tests: dict[str, int] = {}
        scores: dict[str, float] = {}
        month = self._month.of(ms) if state.clim else 0
        worst = state.rules.check(x, ms, month, tests, scores)
        if state.pairs and math.isfinite(x):
            clean = worst < QC_SUSPECT
            for pair, is_a in state.pairs:
                worst = max(worst, pair.update(is_a, x, ms, tests, clean))
        code = ds.quantity_code
        if code in self._co_codes and math.isfinite(x):
            self._latest[(ds.sensor_id, code)] = x
        ml = state.ml
        if ml is not None and math.isfinite(x) and self._cadence_ok(ml, state.rules, ds):
            worst = max(worst, self._score(ml, x, ms, tests, scores))
        else:
            tests["ml_anomaly"] = QC_NOT_EVALUATED
        q = obs.quality
        if q is None:
            obs.quality = Quality(aggregate=worst, tests=tests, scores=scores)
        else:
            q.tests.update(tests)
            q.scores.update(scores)
            q.aggregate = aggregate_flag(q.aggregate, worst)

    @staticmethod
    def _cadence_ok(ml: _MlStream, rules: StreamRules, ds: Datastream) -> bool:
        """False (logged once per stream) when the stream is far off the model's cadence."""
        typical = rules.typical_dt_ms
        if typical <= 0 or ml.min_dt_ms <= typical <= ml.max_dt_ms:
            return True
        if not ml.warned:
            ml.warned = True
            log.warning(
                "quality: %s arrives every %.0f s, the %s model was trained at %.0f s; "
                "not scored", ds.key, typical / 1000.0, ml.scorer.artefact.name,
                ml.max_dt_ms / 2000.0,
            )
        return False

    def _score(self, ml: _MlStream, x: float, ms: int, tests: dict[str, int],
               scores: dict[str, float]) -> int:
        """Push ``x`` into the stream's window and score it once the window is full."""
        latest = self._latest
        co = [latest.get(key, math.nan) for key in ml.co_keys]
        if any(v != v for v in co):  # NaN: co-measured value not seen yet
            tests["ml_anomaly"] = QC_NOT_EVALUATED
            return QC_PASS
        ready = ml.features.push(x, ms, co)
        flag = QC_PASS
        if ready:
            score = ml.scorer.score(ml.features.row) / ml.threshold
            scores["ml_anomaly"] = round(score, 4)
            flag = QC_SUSPECT if score > 1.0 else QC_PASS
            tests["ml_anomaly"] = flag
        else:
            tests["ml_anomaly"] = QC_NOT_EVALUATED
        # keep values the rules or the model rejected out of the windows that follow
        if (
            flag == QC_SUSPECT
            or tests.get("spike", QC_PASS) >= QC_SUSPECT
            or tests.get("gross_range") == QC_FAIL
        ):
            if ml.last_ok == ml.last_ok:
                ml.features.replace_last(ml.last_ok)
        else:
            ml.last_ok = x
        return flag

    def _pm_checks(self, group: dict[str, Observation]) -> None:
        tol = self.settings.pm_order_tolerance
        present = [group[c] for c in PM_ORDER if c in group and _finite(group[c].result)]
        if len(present) >= 2:
            for lo, hi in itertools.pairwise(present):
                bad = lo.result > hi.result + tol
                flag = QC_SUSPECT if bad else QC_PASS
                for o in (lo, hi):
                    q = o.quality or Quality()
                    o.quality = q
                    if q.tests.get("pm_order") != QC_SUSPECT:
                        q.set("pm_order", flag)
        tol = self.settings.pm_cf1_tolerance
        for atm_code, cf1_code in PM_CF1.items():
            atm, cf1 = group.get(atm_code), group.get(cf1_code)
            if atm is None or cf1 is None or not (_finite(atm.result) and _finite(cf1.result)):
                continue
            flag = QC_SUSPECT if atm.result > cf1.result + tol else QC_PASS
            for o in (atm, cf1):
                q = o.quality or Quality()
                o.quality = q
                q.set("pm_cf1", flag)

    def _internal_error(self, obs: Observation) -> None:
        if obs.stream not in self._failed_streams:
            self._failed_streams.add(obs.stream)
            log.exception("quality: internal error on %s; marked not evaluated",
                          obs.stream.key)
        q = obs.quality or Quality()
        obs.quality = q
        q.tests["quality_stage"] = QC_NOT_EVALUATED
