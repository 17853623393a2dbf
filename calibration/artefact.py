"""Calibration artefacts: the JSON file a technician fits and the gateway applies.

An artefact names the quantity and the sensor (model, optional serial) it is valid for, its
ordered inputs (input 0 is the observation's own raw value; the others are co-inputs such as
temperature or humidity), the model coefficients, the input ranges seen during fitting, and
fitting metadata. ``sha256`` is the hash of the canonical JSON of everything else, so any
edit to coefficients or ranges is detected at load time.

Artefacts reach a gateway through ``[calibration] artefact_dir`` (see docs/calibration.md);
provisioning will later sign and push the same files.

Input → output: ``inputs[0].quantity`` is the quantity the artefact reads (e.g. ``pm2_5_cf1``,
a PMS5003's CF=1 stream) and ``quantity`` the one it produces (e.g. ``pm2_5``).

Schemas: ``duet-edge/calibration/2`` (current) defines κ as in :data:`calibration.models.
KAPPA_DEFINITION`. ``duet-edge/calibration/1`` files (κ in the mass-growth form with ρ = 1.65)
still load: their hash is checked on the file as written, then :func:`migrate_v1` converts
them in memory (κ/1.65, identical corrected values); ``calibrate migrate`` writes the result.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from calibration.models import (
    MASS_FORM_DENSITY_RATIO,
    CalibrationMathError,
    ChainModel,
    EnsembleModel,
    Evaluator,
    KoehlerModel,
    LinearModel,
    ModelSpec,
    Term,
    compile_model,
    max_input_index,
)
from edge.quantities import QUANTITIES

SCHEMA = "duet-edge/calibration/2"
LEGACY_SCHEMA = "duet-edge/calibration/1"
ID_PATTERN = r"^[A-Za-z0-9._:+-]+$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputSpec(_Strict):
    name: str = Field(description="Column / role name, e.g. 'signal', 'rh', 'temperature'.")
    quantity: str = Field(description="Quantity code of the datastream that supplies it.")
    range: tuple[float, float] | None = Field(
        None, description="[min, max] seen while fitting; outside it the result is flagged."
    )


class SensorSpec(_Strict):
    model: str = Field(description="Sensor model the calibration is valid for ('' = any).")
    serial: str = Field("", description="Serial it was fitted for ('' = any unit of the model).")


class FitInfo(_Strict):
    period_start: str | None = None
    period_end: str | None = None
    reference_station: str = ""
    n_samples: int = 0
    averaging_s: int | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    validation: dict[str, Any] = Field(default_factory=dict)
    tool: str = "duet-edge calibrate"


class Artefact(_Strict):
    schema_: str = Field(SCHEMA, alias="schema")
    id: str = Field(min_length=1, pattern=ID_PATTERN)
    version: str = Field(min_length=1)
    quantity: str
    sensor: SensorSpec
    inputs: tuple[InputSpec, ...] = Field(min_length=1)
    model: ModelSpec
    fit: FitInfo = FitInfo()
    sha256: str | None = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _consistent(self) -> Artefact:
        if self.schema_ not in (SCHEMA, LEGACY_SCHEMA):
            raise ValueError(f"schema {self.schema_!r} is not supported; expected {SCHEMA!r}")
        for code in [self.quantity, *(i.quantity for i in self.inputs)]:
            if code not in QUANTITIES:
                raise ValueError(f"unknown quantity {code!r}; known: {', '.join(sorted(QUANTITIES))}")
        top = max_input_index(self.model)
        if top >= len(self.inputs):
            raise ValueError(f"model reads input {top} but only {len(self.inputs)} inputs are declared")
        names = [i.name for i in self.inputs]
        if len(set(names)) != len(names):
            raise ValueError(f"input names must be unique, got {names}")
        return self

    def body(self) -> dict[str, Any]:
        """The JSON object without the hash (what the hash covers)."""
        data = self.model_dump(mode="json", by_alias=True, exclude={"sha256"})
        return data

    def content_hash(self) -> str:
        return hashlib.sha256(canonical_json(self.body()).encode()).hexdigest()

    def with_hash(self) -> Artefact:
        return self.model_copy(update={"sha256": self.content_hash()})


class ArtefactError(ValueError):
    """An artefact file that cannot be used (unreadable, invalid, or hash mismatch)."""


def canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def save_artefact(artefact: Artefact, path: str | Path) -> Artefact:
    """Write the artefact with its content hash; returns the hashed artefact."""
    hashed = artefact.with_hash()
    data = hashed.model_dump(mode="json", by_alias=True)
    Path(path).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return hashed


def parse_artefact(text: str, source: str = "<artefact>", require_hash: bool = True) -> Artefact:
    """Validate an artefact's JSON and check its hash (on the content as written).

    A schema-1 artefact is migrated to the current schema in memory (see :func:`migrate_v1`).
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ArtefactError(f"{source}: not valid JSON: {exc}") from None
    try:
        artefact = Artefact.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors()
        )
        raise ArtefactError(f"{source}: invalid calibration artefact: {problems}") from None
    if artefact.sha256 is None:
        if require_hash:
            raise ArtefactError(f"{source}: missing sha256 content hash")
    else:
        written = hashlib.sha256(
            canonical_json({k: v for k, v in data.items() if k != "sha256"}).encode()
        ).hexdigest()
        if artefact.sha256 != written:
            raise ArtefactError(
                f"{source}: sha256 mismatch (file says {artefact.sha256[:12]}…, content is "
                f"{written[:12]}…): the artefact was modified after it was written"
            )
    if artefact.schema_ == LEGACY_SCHEMA:
        artefact = migrate_v1(artefact)
    return artefact


def _kappa_to_volume_form(spec: ModelSpec) -> ModelSpec:
    if isinstance(spec, KoehlerModel):
        return spec.model_copy(update={"kappa": spec.kappa / MASS_FORM_DENSITY_RATIO})
    if isinstance(spec, ChainModel):
        return spec.model_copy(update={"steps": tuple(_kappa_to_volume_form(s) for s in spec.steps)})
    if isinstance(spec, EnsembleModel):
        return spec.model_copy(
            update={"members": tuple(_kappa_to_volume_form(m) for m in spec.members)})
    return spec


def migrate_v1(artefact: Artefact) -> Artefact:
    """Schema 1 → current schema: κ (mass form, ρ 1.65) becomes κ/1.65 (volume form).

    The corrected values are unchanged; the new hash covers the migrated content, and the fit
    record names the original hash so the provenance stays traceable.
    """
    if artefact.schema_ != LEGACY_SCHEMA:
        return artefact
    validation = dict(artefact.fit.validation)
    validation["migrated_from"] = {"schema": LEGACY_SCHEMA, "sha256": artefact.sha256 or ""}
    migrated = artefact.model_copy(update={
        "schema_": SCHEMA,
        "model": _kappa_to_volume_form(artefact.model),
        "fit": artefact.fit.model_copy(update={"validation": validation}),
        "sha256": None,
    })
    return migrated.with_hash()


def load_artefact(path: str | Path, require_hash: bool = True) -> Artefact:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ArtefactError(f"{path}: cannot read: {exc.strerror}") from None
    return parse_artefact(text, source=str(path), require_hash=require_hash)


def load_directory(directory: str | Path) -> dict[str, Artefact]:
    """Every ``*.json`` artefact in a directory, by id (highest version wins on duplicates)."""
    found: dict[str, Artefact] = {}
    for path in sorted(Path(directory).glob("*.json")):
        artefact = load_artefact(path)
        prev = found.get(artefact.id)
        if prev is None or _version_key(artefact.version) > _version_key(prev.version):
            found[artefact.id] = artefact
    return found


def _version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in version.split("."))


# ---------------------------------------------------------------- applying an artefact

OK = 0
OUT_OF_RANGE = 1
DOMAIN_ERROR = 2


@dataclass(frozen=True, slots=True)
class CompiledCalibration:
    """An artefact ready for the hot path: evaluator plus flattened range bounds."""

    artefact: Artefact
    evaluate: Evaluator
    lows: tuple[float, ...]
    highs: tuple[float, ...]

    def apply(self, values: tuple[float, ...] | list[float]) -> tuple[float, int]:
        """Calibrated value and status (OK, OUT_OF_RANGE, DOMAIN_ERROR → value is NaN)."""
        status = OK
        for v, lo, hi in zip(values, self.lows, self.highs, strict=False):
            if v < lo or v > hi:
                status = OUT_OF_RANGE
                break
        try:
            out = self.evaluate(values)
        except (CalibrationMathError, ArithmeticError):
            return math.nan, DOMAIN_ERROR
        if not math.isfinite(out):
            return math.nan, DOMAIN_ERROR
        return out, status


def compile_artefact(artefact: Artefact) -> CompiledCalibration:
    lows = tuple(i.range[0] if i.range else -math.inf for i in artefact.inputs)
    highs = tuple(i.range[1] if i.range else math.inf for i in artefact.inputs)
    return CompiledCalibration(artefact, compile_model(artefact.model), lows, highs)


# ---------------------------------------------------------------- presets


def purpleair_epa_preset(sensor_model: str = "PMS5003") -> Artefact:
    """US-EPA nationwide PurpleAir correction (Barkjohn et al. 2021, AMT 14:4617).

    PM2.5 = 0.524 · PM2.5_cf1 − 0.0862 · RH + 5.75, for PM2.5_cf1 in µg/m³ and RH in %.
    Published for the 0–250 µg/m³ range of the fitting data set; RH 0–100 %.
    """
    return Artefact(
        id="us-epa-purpleair-2021",
        version="1",
        quantity="pm2_5",
        sensor=SensorSpec(model=sensor_model),
        inputs=(
            InputSpec(name="pm2_5_cf1", quantity="pm2_5_cf1", range=(0.0, 250.0)),
            InputSpec(name="rh", quantity="humidity", range=(0.0, 100.0)),
        ),
        model=LinearModel(
            intercept=5.75,
            terms=(Term(input=0, coef=0.524), Term(input=1, coef=-0.0862)),
        ),
        fit=FitInfo(reference_station="US-EPA FEM/FRM network (Barkjohn et al. 2021)"),
    ).with_hash()


PRESETS = {"us-epa-purpleair-2021": purpleair_epa_preset}
