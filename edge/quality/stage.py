"""The quality pipeline stage: QARTOD rules, the learned anomaly score and TinyML, between
calibration and the outbox (docs/quality.md)."""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import struct
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

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
from edge.quality import checkpoint as ckpt
from edge.quality.detector import StreamDetector
from edge.quality.ml import LiteRtScorer, MlUnavailable, ModelArtefact, WindowFeatures, discover
from edge.quality.retrain import History, retrain, write_artefact
from edge.quality.rules import PairState, StreamRules
from edge.quality.settings import QualitySettings
from edge.quality.train import Series
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
    __slots__ = ("co_keys", "features", "history", "last_ok", "max_dt_ms", "min_dt_ms",
                 "scorer", "threshold", "warned")

    def __init__(self, scorer: LiteRtScorer, sensor_id: str, history: History | None) -> None:
        self.co_keys = [(sensor_id, code) for code in scorer.artefact.co_features]
        self.history = history
        self.warned = False
        self.use(scorer)

    def use(self, scorer: LiteRtScorer) -> None:
        """Score with ``scorer`` from now on (its window fills anew)."""
        art = scorer.artefact
        self.scorer = scorer
        self.features = WindowFeatures(art)
        self.threshold = art.threshold
        self.last_ok = math.nan
        period = art.sample_period_s
        self.min_dt_ms = 0.0 if period is None else period * 1000.0 / 2.0
        self.max_dt_ms = math.inf if period is None else period * 1000.0 * 2.0


class _Stream:
    __slots__ = ("clim", "detector", "ml", "pairs", "rules")

    def __init__(self, rules: StreamRules, detector: StreamDetector | None,
                 ml: _MlStream | None, pairs: list[tuple[PairState, bool]]) -> None:
        self.rules = rules
        self.clim = rules.has_climatology
        self.detector = detector
        self.ml = ml
        self.pairs = pairs


def _train_and_write(sets: list[tuple[ModelArtefact, Series]]) -> list[Path]:
    """Retrain each model on its series and write it back into the folder it came from."""
    written = []
    for old, series in sets:
        assert old.folder is not None
        try:
            new = retrain(old, series)
        except ValueError as exc:  # TrainingDataError: not enough clean history yet
            log.info("quality: %s not retrained yet (%s)", old.name, exc)
            continue
        written.append(write_artefact(new, old.folder))
        log.info("quality: %s retrained on %d rows of recent history", old.name,
                 len(series.times_ms))
    return written


class QualityStage:
    """``process(observations)`` flags observations in arrival order (never raises on data).

    Per datastream: the rule state (a few floats and a ``spike_window`` ring buffer), the
    learned anomaly detector (``edge.quality.detector``, under 2 KiB) and, for quantities with
    an anomaly model, one feature row. The learned state is restored by :meth:`open` and
    checkpointed into the outbox every ``anomaly.checkpoint_interval_s`` and at :meth:`close`,
    so a restart continues exactly where the committed data ends. ML availability is decided
    once at construction: if the runtime or a model is missing, that is logged once and
    ``ml_anomaly`` is 2; the learned detector does not depend on it.
    """

    name = "quality"
    STATE_KEY = "anomaly"

    def __init__(self, settings: QualitySettings, scorer_factory: Scorer | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._streams: dict[Datastream, _Stream] = {}
        self._latest: dict[tuple[str, str], float] = {}
        self._pairs = [PairState(p) for p in settings.colocated]
        self._month = _Month()
        self._failed_streams: set[Datastream] = set()
        self._clock = clock
        self._store: StateStore | None = None
        self._restored: dict[str, ckpt.StreamState] = {}
        self._next_checkpoint = math.inf
        self.ml_status = "disabled"
        self._scorers: dict[str, LiteRtScorer] = {}
        self._factory: Scorer = scorer_factory or LiteRtScorer
        self._co_codes: frozenset[str] = frozenset()
        self._next_reload = math.inf
        self._next_retrain = math.inf
        self._retraining: threading.Thread | None = None
        if settings.enabled and settings.ml.enabled:
            self._load_models(self._factory)
            if self._scorers:
                now = clock()
                self._next_reload = now + settings.ml.reload_interval_s
                if settings.ml.retrain:
                    self._next_retrain = now + settings.ml.retrain_interval_s

    # ------------------------------------------------------------------ durable state
    def open(self, state: StateStore) -> None:
        """Restore the learned state of every datastream from the last checkpoint."""
        self._store = state
        self._next_checkpoint = self._clock() + self.settings.anomaly.checkpoint_interval_s
        blob = state.recall(self.STATE_KEY)
        if not blob:
            return
        try:
            self._restored = ckpt.decode(blob)
        except ValueError as exc:
            log.warning("quality: learned state not restored, learning anew (%s)", exc)
            return
        log.info("quality: learned state of %d datastreams restored", len(self._restored))

    def close(self) -> None:
        """Stage a last checkpoint: it is committed with the outbox's final group."""
        if self._store is not None:
            self.checkpoint()

    def checkpoint(self) -> bytes:
        """Stage the learned state of every datastream now; returns the staged blob."""
        states = dict(self._restored)  # streams not seen since the restart keep theirs
        for ds, stream in self._streams.items():
            det = stream.detector
            states[ds.key] = (stream.rules.to_bytes(), b"" if det is None else det.to_bytes())
        blob = ckpt.encode(states)
        if self._store is not None:
            self._store.stage(self.STATE_KEY, blob)
        self._next_checkpoint = self._clock() + self.settings.anomaly.checkpoint_interval_s
        return blob

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
        anomaly = self.settings.anomaly
        detector = StreamDetector(anomaly.threshold, anomaly.warmup) if anomaly.enabled else None
        saved = self._restored.pop(ds.key, None)
        if saved is not None:
            rules, detector = self._restore(ds, rules, detector, saved)
        scorer = self._scorers.get(ds.quantity_code)
        ml = None
        if scorer is not None:
            ml_settings = self.settings.ml
            history = (History(ml_settings.history_days, scorer.artefact.sample_period_s or 3600)
                       if ml_settings.retrain else None)
            ml = _MlStream(scorer, ds.sensor_id, history)
        pairs = []
        for pair in self._pairs:
            if pair.cfg.quantity == ds.quantity_code:
                if pair.cfg.sensor_a == ds.sensor_id:
                    pairs.append((pair, True))
                elif pair.cfg.sensor_b == ds.sensor_id:
                    pairs.append((pair, False))
        state = _Stream(rules, detector, ml, pairs)
        self._streams[ds] = state
        return state

    def _restore(
        self, ds: Datastream, rules: StreamRules, detector: StreamDetector | None,
        saved: ckpt.StreamState,
    ) -> tuple[StreamRules, StreamDetector | None]:
        """A datastream's checkpointed state (one that no longer fits is dropped, logged)."""
        rules_state, detector_state = saved
        anomaly = self.settings.anomaly
        try:
            restored = StreamRules(self.settings.thresholds(ds.quantity_code))
            restored.restore(rules_state)
            if detector is not None and detector_state:
                detector = StreamDetector.from_bytes(detector_state, anomaly.threshold)
                detector.warmup = anomaly.warmup
        except (ValueError, struct.error) as exc:
            log.warning("quality: state of %s not restored, learning anew (%s)", ds.key, exc)
            return rules, StreamDetector(anomaly.threshold, anomaly.warmup) if detector else None
        return restored, detector

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
        now = self._clock()
        if self._store is not None and now >= self._next_checkpoint:
            self.checkpoint()
        if now >= self._next_reload:
            self.reload_models()
        if now >= self._next_retrain:
            self._start_retraining()
        return observations

    # ------------------------------------------------------------------ TinyML upkeep
    def reload_models(self) -> list[str]:
        """Hot-swap every model whose artefact in ``ml.model_dir`` changed; names swapped."""
        self._next_reload = self._clock() + self.settings.ml.reload_interval_s
        swapped: list[str] = []
        try:
            artefacts = discover(self.settings.ml.model_dir)
        except (OSError, ValueError, KeyError) as exc:  # e.g. caught between two renames
            log.warning("quality: model folder not reloaded, keeping the models (%s)", exc)
            return swapped
        for art in artefacts:
            current = self._scorers.get(art.quantity)
            if current is not None and current.artefact.tflite == art.tflite:
                continue
            try:
                scorer = self._factory(art)
            except (MlUnavailable, ValueError) as exc:
                log.warning("quality: model %s not swapped in (%s)", art.name, exc)
                continue
            self._scorers[art.quantity] = scorer
            for stream in self._streams.values():
                if stream.ml is not None and stream.ml.scorer.artefact.quantity == art.quantity:
                    stream.ml.use(scorer)
            swapped.append(f"{art.name}@{art.version}")
            log.info("quality: anomaly model hot-swapped: %s@%s (sha256 %s…)", art.name,
                     art.version, hashlib.sha256(art.tflite).hexdigest()[:12])
        if swapped:
            names = ", ".join(f"{s.artefact.name}@{s.artefact.version}"
                              for s in self._scorers.values())
            self.ml_status = f"ok: {names}"
        return swapped

    def retrain_now(self) -> list[Path]:
        """Retrain every model from the longest recent history of its datastreams and write
        it into ``ml.model_dir`` (deterministic: same history, same bytes). Folders written."""
        return _train_and_write(self._training_sets())

    def _training_sets(self) -> list[tuple[ModelArtefact, Series]]:
        """Per model, a copy of the longest recent history among the streams it scores."""
        sets = []
        for quantity, scorer in self._scorers.items():
            old = scorer.artefact
            histories = [s.ml.history for s in self._streams.values()
                         if s.ml is not None and s.ml.history is not None
                         and s.ml.scorer.artefact.quantity == quantity]
            if histories and old.folder is not None:
                longest = max(histories, key=lambda h: len(h.rows))
                sets.append((old, longest.series(quantity, old.co_features)))
        return sets

    def _start_retraining(self) -> None:
        """Retrain in a background thread (on copies of the histories, taken here); the next
        batch after it finished swaps the new models in."""
        self._next_retrain = self._clock() + self.settings.ml.retrain_interval_s
        if self._retraining is not None and self._retraining.is_alive():
            return
        sets = self._training_sets()

        def job() -> None:
            try:
                if _train_and_write(sets):
                    self._next_reload = 0.0  # swap in at the next batch
            except Exception:  # never let a training problem reach the gateway
                log.exception("quality: retraining failed; keeping the current models")

        self._retraining = threading.Thread(target=job, name="quality-retrain", daemon=True)
        self._retraining.start()

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
        det = state.detector
        if det is not None:
            worst = max(worst, self._anomaly(det, x, ms, tests, scores))
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
    def _anomaly(det: StreamDetector, x: float, ms: int, tests: dict[str, int],
                 scores: dict[str, float]) -> int:
        """The learned score (``scores.anomaly``) and its alarm (``tests.anomaly``).

        A value that fails gross range is not learned from (it scores as "never seen").
        """
        learnable = tests.get("gross_range") != QC_FAIL
        score = det.update(x if learnable else math.nan, ms)
        scores["anomaly"] = round(score, 3)
        if not det.warm:
            tests["anomaly"] = QC_NOT_EVALUATED
            return QC_PASS
        flag = QC_SUSPECT if det.alarm else QC_PASS
        tests["anomaly"] = flag
        return flag

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
        rejected = (
            flag == QC_SUSPECT
            or tests.get("spike", QC_PASS) >= QC_SUSPECT
            or tests.get("gross_range") == QC_FAIL
            or tests.get("anomaly", QC_PASS) >= QC_SUSPECT
        )
        if rejected:
            if ml.last_ok == ml.last_ok:
                ml.features.replace_last(ml.last_ok)
        else:
            ml.last_ok = x
        if ml.history is not None:
            ml.history.add(ms, x, co, clean=not rejected)
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
