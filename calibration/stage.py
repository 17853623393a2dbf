"""The gateway pipeline stage that applies calibration artefacts to observations.

``CalibrationStage(settings).process(batch)`` runs synchronously in the ingest path. For every
observation of an assigned datastream it:

- gathers the co-inputs (temperature, RH, O3...) from the latest observations of the mapped
  datastreams this stage has seen (observations of T/RH pass through the same stage; a batch
  is scanned for co-inputs first, so order inside a batch does not matter);
- clamps RH inputs to ``rh_clamp``;
- evaluates the artefact, stores the raw value in ``raw_result`` and the calibrated one in
  ``result``, and replaces the provenance's ``calibration_id``/``calibration_version``;
- records ``quality.tests["calibration"]``: 1 pass, 3 suspect (an input outside the range the
  calibration was fitted on: the value is computed but flagged, never silently extrapolated),
  4 fail (missing/stale co-input, input outside the model's domain, artefact not valid for this
  sensor): the observation is then left uncalibrated.

It never raises on bad data. Problems in the configuration (unknown artefact id, input
quantities that do not match) raise :class:`CalibrationConfigError` at construction.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Mapping

from calibration.artefact import (
    Artefact,
    ArtefactError,
    CompiledCalibration,
    compile_artefact,
    load_directory,
)
from calibration.models import CalibrationMathError
from calibration.settings import CalibrationAssignment, CalibrationSettings
from edge.model import QC_FAIL, QC_PASS, QC_SUSPECT, Datastream, Observation, Provenance, Quality
from edge.seams import StateStore

log = logging.getLogger(__name__)

TEST_NAME = "calibration"
_INF = math.inf
STAT_KEYS = (
    "calibrated", "out_of_range", "missing_input", "domain_error", "sensor_mismatch", "invalid_value"
)
HUMIDITY = "humidity"


class CalibrationConfigError(ValueError):
    """The [calibration] settings and the artefacts on disk do not fit together."""


@dataclasses.dataclass(slots=True)
class _Plan:
    """How to calibrate one datastream (resolved once, then reused for every observation)."""

    compiled: CompiledCalibration | None
    co_keys: tuple[tuple[str, str], ...] = ()
    rh_indices: tuple[int, ...] = ()
    out_stream: Datastream | None = None
    reject_reason: str = ""
    prov_out: Provenance | None = None
    checks: tuple[tuple[int, float, float], ...] = ()  # (input index, low, high), finite only
    run: Callable[[Observation], None] | None = None  # the specialised hot-path closure


class CalibrationStage:
    """Pipeline stage: ``process(observations) -> observations`` (mutates them in place)."""

    name = "calibration"

    def open(self, state: StateStore) -> None:
        """Calibration keeps no learned state (artefacts are loaded at construction)."""
        del state

    def close(self) -> None:
        """Nothing to checkpoint."""

    def __init__(
        self,
        settings: CalibrationSettings,
        artefacts: Mapping[str, Artefact] | None = None,
    ) -> None:
        self.settings = settings
        if artefacts is None:
            try:
                artefacts = load_directory(settings.artefact_dir) if settings.enabled else {}
            except ArtefactError as exc:
                raise CalibrationConfigError(str(exc)) from None
        self.artefacts = dict(artefacts)
        self._compiled: dict[str, CompiledCalibration] = {}
        if settings.enabled:
            for assignment in settings.assign:
                self._check_assignment(assignment)
        self._rh_lo, self._rh_hi = settings.rh_clamp
        self._max_age_ms = int(settings.max_co_input_age_s * 1000)
        # Which datastreams supply co-inputs is fixed by the configuration, so it is resolved
        # here, once: explicit '<sensor>/<quantity>' keys, plus every quantity an artefact takes
        # from the calibrated sensor itself (any sensor id: the assignment may filter by model).
        # Resolving it lazily on the first PM observation lost the co-inputs of the first batch.
        self._watch_keys, self._watch_quantities = self._co_input_sources()
        self._latest: dict[tuple[str, str], tuple[float, int]] = {}
        # Caches keyed by id() of the interned Datastream (checked with `is`): hashing the
        # frozen dataclass on every observation would cost a third of the time budget.
        self._plans: dict[int, tuple[Datastream, Provenance, _Plan | None]] = {}
        self._watched_streams: dict[int, tuple[Datastream, tuple[str, str] | None]] = {}
        self.stats: dict[str, int] = dict.fromkeys(STAT_KEYS, 0)

    def _co_input_sources(self) -> tuple[frozenset[tuple[str, str]], frozenset[str]]:
        """(explicit co-input datastream keys, quantities taken from the calibrated sensor)."""
        keys: set[tuple[str, str]] = set()
        same_sensor: set[str] = set()
        for assignment in self.settings.assign if self.settings.enabled else ():
            artefact = self._compiled[assignment.artefact].artefact
            for spec in artefact.inputs[1:]:
                mapped = assignment.co_inputs.get(spec.name)
                if mapped is None:
                    same_sensor.add(spec.quantity)
                else:
                    sensor, _, qty = mapped.rpartition("/")
                    keys.add((sensor, qty))
        return frozenset(keys), frozenset(same_sensor)

    # ------------------------------------------------------------ configuration

    def _check_assignment(self, a: CalibrationAssignment) -> None:
        artefact = self.artefacts.get(a.artefact)
        if artefact is None:
            known = ", ".join(sorted(self.artefacts)) or "none"
            raise CalibrationConfigError(
                f"calibration.assign artefact {a.artefact!r} not found in "
                f"{self.settings.artefact_dir}; artefacts there: {known}"
            )
        if artefact.inputs[0].quantity != a.quantity:
            raise CalibrationConfigError(
                f"calibration.assign for {a.artefact!r}: quantity {a.quantity!r} does not match the "
                f"artefact's first input quantity {artefact.inputs[0].quantity!r}"
            )
        names = {i.name for i in artefact.inputs[1:]}
        unknown = sorted(set(a.co_inputs) - names)
        if unknown:
            raise CalibrationConfigError(
                f"calibration.assign for {a.artefact!r}: co_inputs {unknown} are not inputs of the "
                f"artefact; its co-inputs are {sorted(names) or 'none'}"
            )
        self._compiled[a.artefact] = compile_artefact(artefact)

    def _match(self, obs: Observation) -> CalibrationAssignment | None:
        stream, prov = obs.stream, obs.provenance
        for a in self.settings.assign:
            if a.quantity != stream.quantity_code:
                continue
            if a.sensor_id is not None and a.sensor_id != stream.sensor_id:
                continue
            if a.sensor_model is not None and a.sensor_model != prov.sensor_model:
                continue
            if a.sensor_serial is not None and a.sensor_serial != prov.sensor_serial:
                continue
            return a
        return None

    def _resolve(self, obs: Observation) -> _Plan | None:
        assignment = self._match(obs)
        if assignment is None:
            return None
        compiled = self._compiled[assignment.artefact]
        artefact = compiled.artefact
        prov = obs.provenance
        reason = ""
        if artefact.sensor.model and prov.sensor_model and (
            artefact.sensor.model.casefold() != prov.sensor_model.casefold()
        ):
            reason = f"artefact is for sensor model {artefact.sensor.model!r}, not {prov.sensor_model!r}"
        elif artefact.sensor.serial and artefact.sensor.serial != prov.sensor_serial:
            reason = f"artefact is for serial {artefact.sensor.serial!r}, not {prov.sensor_serial!r}"
        if reason:
            log.warning("calibration %s not applied to %s: %s", artefact.id, obs.stream.key, reason)
            return _Plan(compiled=None, reject_reason=reason)
        co_keys: list[tuple[str, str]] = []
        for spec in artefact.inputs[1:]:
            mapped = assignment.co_inputs.get(spec.name)
            if mapped is not None:
                sensor, _, qty = mapped.rpartition("/")
                key = (sensor, qty)
            else:
                key = (obs.stream.sensor_id, spec.quantity)
            co_keys.append(key)
        out_stream = None
        if artefact.quantity != obs.stream.quantity_code:
            out_stream = dataclasses.replace(obs.stream, quantity_code=artefact.quantity)
        return _Plan(
            compiled=compiled,
            prov_out=dataclasses.replace(
                prov, calibration_id=artefact.id, calibration_version=artefact.version
            ),
            checks=tuple(
                (i, lo, hi)
                for i, (lo, hi) in enumerate(zip(compiled.lows, compiled.highs, strict=True))
                if math.isfinite(lo) or math.isfinite(hi)
            ),
            co_keys=tuple(co_keys),
            rh_indices=tuple(n for n, i in enumerate(artefact.inputs) if i.quantity == HUMIDITY),
            out_stream=out_stream,
        )

    # ------------------------------------------------------------ hot path

    def process(self, observations: list[Observation]) -> list[Observation]:
        """Calibrate the observations in place and return the same list."""
        if not self.settings.enabled or not self.settings.assign:
            return observations
        if self._watch_keys or self._watch_quantities:
            self._record_co_inputs(observations)
        plans = self._plans
        for obs in observations:
            stream = obs.stream
            cached = plans.get(id(stream))
            if cached is None or cached[0] is not stream or cached[1] is not obs.provenance:
                plan = self._safe_resolve(obs)
                plans[id(stream)] = (stream, obs.provenance, plan)
            else:
                plan = cached[2]
            if plan is not None:
                plan.run(obs)  # type: ignore[misc]  # set by _safe_resolve
        return observations

    def _record_co_inputs(self, observations: list[Observation]) -> None:
        latest = self._latest
        watched = self._watched_streams
        for obs in observations:
            stream = obs.stream
            hit = watched.get(id(stream))
            if hit is None or hit[0] is not stream:
                key = (stream.sensor_id, stream.quantity_code)
                wanted = key in self._watch_keys or key[1] in self._watch_quantities
                hit = (stream, key if wanted else None)
                watched[id(stream)] = hit
            if hit[1] is not None:
                latest[hit[1]] = (obs.result, obs.phenomenon_ms)

    def _safe_resolve(self, obs: Observation) -> _Plan | None:
        try:
            plan = self._resolve(obs)
        except Exception:  # never let a bad observation stop the ingest path
            log.exception("cannot resolve a calibration for %s", obs.stream.key)
            plan = _Plan(compiled=None, reject_reason="internal error while resolving")
        if plan is not None:
            plan.run = self._make_runner(plan)
        return plan

    def _make_runner(self, plan: _Plan) -> Callable[[Observation], None]:
        """A closure with everything bound as locals: attribute lookups cost ~40 ns each."""
        compiled = plan.compiled
        fail = self._fail
        if compiled is None:
            return lambda obs: fail(obs, "sensor_mismatch")
        evaluate = compiled.evaluate
        co_keys = plan.co_keys
        rh_indices = plan.rh_indices
        checks = plan.checks
        prov_out = plan.prov_out
        out_stream = plan.out_stream
        latest = self._latest
        max_age = self._max_age_ms
        rh_lo, rh_hi = self._rh_lo, self._rh_hi
        stats = self.stats
        math_errors = (CalibrationMathError, ArithmeticError)

        def run(obs: Observation) -> None:
            raw = obs.result
            if raw != raw:  # NaN
                fail(obs, "invalid_value")
                return
            values = [raw]
            if co_keys:
                t = obs.phenomenon_ms
                for key in co_keys:
                    got = latest.get(key)
                    if got is None or abs(got[1] - t) > max_age or got[0] != got[0]:
                        fail(obs, "missing_input")
                        return
                    values.append(got[0])
                for i in rh_indices:
                    v = values[i]
                    values[i] = rh_lo if v < rh_lo else rh_hi if v > rh_hi else v
            flag = QC_PASS
            for i, lo, hi in checks:
                v = values[i]
                if v < lo or v > hi:
                    flag = QC_SUSPECT
                    break
            try:
                value = evaluate(values)
            except math_errors:
                fail(obs, "domain_error")
                return
            if not -_INF < value < _INF:  # NaN or infinite
                fail(obs, "domain_error")
                return
            obs.raw_result = raw
            obs.result = value
            obs.provenance = prov_out  # type: ignore[assignment]  # resolved per provenance
            if out_stream is not None:
                obs.stream = out_stream
            quality = obs.quality
            if quality is None:
                obs.quality = Quality(aggregate=flag, tests={TEST_NAME: flag})
            else:
                quality.set(TEST_NAME, flag)
            if flag == QC_PASS:
                stats["calibrated"] += 1
            else:
                stats["out_of_range"] += 1

        return run

    def _fail(self, obs: Observation, reason: str) -> None:
        self.stats[reason] += 1
        if obs.quality is None:
            obs.quality = Quality(aggregate=QC_FAIL, tests={TEST_NAME: QC_FAIL})
        else:
            obs.quality.set(TEST_NAME, QC_FAIL)
