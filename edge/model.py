"""The observation data model shared by every stage.

Times are integer milliseconds since the Unix epoch, UTC. A phenomenon time is an instant
(``phenomenon_end_ms is None``) or an interval ``[phenomenon_ms, phenomenon_end_ms]`` for
averages and traffic counts.

Datastreams and provenance are small immutable objects interned per source, so the hot
path only carries references to them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from edge.quantities import Quantity, quantity

# Namespace for observation ids: UUIDv5(OBSERVATION_NAMESPACE, f"{gateway_id}/{sequence}").
OBSERVATION_NAMESPACE = uuid.UUID("6f0c2b0e-5b8a-5d0e-9a59-0c1d2e3f4a5b")


def observation_id(gateway_id: str, sequence: int) -> uuid.UUID:
    """The deterministic id of an observation: retried uploads carry the same id."""
    return uuid.uuid5(OBSERVATION_NAMESPACE, f"{gateway_id}/{sequence}")


@dataclass(frozen=True, slots=True)
class Datastream:
    """(gateway, sensor, observed quantity): the series an observation belongs to."""

    gateway_id: str
    sensor_id: str
    quantity_code: str

    @property
    def quantity(self) -> Quantity:
        return quantity(self.quantity_code)

    @property
    def key(self) -> str:
        """Stable text key, ``sensor_id/quantity`` (unique within one gateway)."""
        return f"{self.sensor_id}/{self.quantity_code}"


@dataclass(frozen=True, slots=True)
class Provenance:
    """Where a value came from. Empty strings mean "not known"."""

    sensor_model: str
    sensor_serial: str = ""
    firmware_version: str = ""
    calibration_id: str = ""
    calibration_version: str = ""
    node_id: str = ""

    def as_dict(self) -> dict[str, str]:
        """Only the known fields, with stable key names used on the wire."""
        items = {
            "sensorModel": self.sensor_model,
            "sensorSerial": self.sensor_serial,
            "firmwareVersion": self.firmware_version,
            "calibrationId": self.calibration_id,
            "calibrationVersion": self.calibration_version,
            "nodeId": self.node_id,
        }
        return {k: v for k, v in items.items() if v}

    @classmethod
    def from_dict(cls, data: dict[str, str]) -> Provenance:
        return cls(
            sensor_model=data.get("sensorModel", ""),
            sensor_serial=data.get("sensorSerial", ""),
            firmware_version=data.get("firmwareVersion", ""),
            calibration_id=data.get("calibrationId", ""),
            calibration_version=data.get("calibrationVersion", ""),
            node_id=data.get("nodeId", ""),
        )


# QARTOD flag scale, used per test and as the aggregate.
QC_PASS = 1
QC_NOT_EVALUATED = 2
QC_SUSPECT = 3
QC_FAIL = 4
QC_MISSING = 9


@dataclass(slots=True)
class Quality:
    """Quality flags: aggregate QARTOD flag, per-test flags, and free-form reasons.

    ``tests`` maps a test name (``"gross_range"``, ``"spike"``, ``"calibration_range"``,
    ``"ml_anomaly"``...) to its QARTOD flag. ``scores`` holds numbers such as the anomaly score.
    """

    aggregate: int = QC_NOT_EVALUATED
    tests: dict[str, int] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)

    def set(self, test: str, flag: int) -> None:
        """Record one test's flag and fold it into the aggregate (worst of 4 > 3 > 1 > 2)."""
        self.tests[test] = flag
        self.aggregate = aggregate_flag(self.aggregate, flag)

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"agg": self.aggregate}
        if self.tests:
            out["tests"] = dict(self.tests)
        if self.scores:
            out["scores"] = dict(self.scores)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Quality:
        tests = data.get("tests") or {}
        scores = data.get("scores") or {}
        agg = data.get("agg", QC_NOT_EVALUATED)
        return cls(
            aggregate=int(agg) if isinstance(agg, int) else QC_NOT_EVALUATED,
            tests={str(k): int(v) for k, v in dict(tests).items()},  # type: ignore[call-overload]
            scores={str(k): float(v) for k, v in dict(scores).items()},  # type: ignore[call-overload]
        )


_SEVERITY = {QC_MISSING: 5, QC_FAIL: 4, QC_SUSPECT: 3, QC_PASS: 2, QC_NOT_EVALUATED: 1}


def aggregate_flag(a: int, b: int) -> int:
    """QARTOD aggregation: the most severe flag wins (missing > fail > suspect > pass > not evaluated)."""
    return a if _SEVERITY.get(a, 0) >= _SEVERITY.get(b, 0) else b


@dataclass(slots=True)
class Observation:
    """One value of one datastream. ``sequence`` is set by the outbox when it is committed."""

    stream: Datastream
    result: float
    phenomenon_ms: int
    provenance: Provenance
    phenomenon_end_ms: int | None = None
    result_ms: int | None = None  # None: equal to the end of the phenomenon time
    raw_result: float | None = None  # uncalibrated value, when a calibration was applied
    quality: Quality | None = None
    sequence: int | None = None

    @property
    def result_time_ms(self) -> int:
        if self.result_ms is not None:
            return self.result_ms
        return self.phenomenon_end_ms if self.phenomenon_end_ms is not None else self.phenomenon_ms


@dataclass(frozen=True, slots=True)
class Batch:
    """Committed observations handed to an uplink, in the order they must be sent."""

    gateway_id: str
    observations: tuple[Observation, ...]

    @property
    def sequences(self) -> list[int]:
        return [o.sequence for o in self.observations if o.sequence is not None]

    def __len__(self) -> int:
        return len(self.observations)


@dataclass(slots=True)
class Delivery:
    """What an uplink reports back for one batch.

    ``confirmed``: the receiver has them (including "409 already exists"): delete them.
    ``rejected``: permanent per-row errors, sequence → reason: move to the dead-letter table.
    Anything in the batch that is in neither is retried later, in order.
    """

    confirmed: list[int] = field(default_factory=list)
    rejected: dict[int, str] = field(default_factory=dict)
