"""Calibration model specifications and their compiled, allocation-light evaluators.

A model maps an ordered tuple of input values (the artefact's ``inputs``; the first one is
the observation's own raw value) to a calibrated value. Specs are pydantic models so that
artefacts are validated when loaded; :func:`compile_model` turns a spec into a plain
closure cheap enough for the gateway's hot path (no numpy here: the gateway must not need it).

Model family:

- ``linear``: ``g(y) = b0 + Σ c_i · f_i(x_i) · x_j`` where ``f_i`` is ``identity``, ``log`` or
  ``hinge`` (``max(x − knot, 0)``, a piecewise-linear basis), the optional factor ``x_j``
  (``times``) makes an interaction term, and ``g`` is ``identity`` or ``log`` (``log``/``log``
  is the power law of metal-oxide cells). Offset/gain, multilinear with T/RH/O3 terms and the
  piecewise-linear-in-RH gain (``rh-hinge``) are special cases.
- ``koehler``: κ-Köhler hygroscopic-growth correction for optical PM (definition below).
- ``chain``: steps applied in order; each step's output replaces input 0 for the next step
  (e.g. humidity correction, then linear).
- ``ensemble``: weighted mean of member models (used when a blend wins validation).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Evaluator = Callable[[Sequence[float]], float]

KAPPA_DEFINITION = (
    "κ is the hygroscopicity parameter of Petters & Kreidenweis (2007, Atmos. Chem. Phys. 7, "
    "1961, eq. 11 without the Kelvin term): wet/dry particle volume = 1 + κ·a_w/(1 − a_w), "
    "a_w = RH/100. An optical sensor converts scattering to mass with a fixed density, so its "
    "reading grows like the particle volume: PM_dry = PM / (1 + κ / (100/RH − 1))."
)
# Schema-1 artefacts wrote the mass-growth form of Crilley et al. (2018, Atmos. Meas. Tech. 11,
# 709), PM_dry = PM / (1 + (κ_m/1.65) / (100/RH − 1)), 1.65 being ρ_particle/ρ_water; the same
# correction has κ = κ_m / 1.65 in the definition above (the migration divides by this).
MASS_FORM_DENSITY_RATIO = 1.65


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Term(_Spec):
    """One regressor: ``coef · transform(inputs[input]) [· inputs[times]]``."""

    input: int = Field(ge=0, description="Index into the artefact's inputs (0 = own raw value).")
    transform: Literal["identity", "log", "hinge"] = "identity"
    coef: float
    knot: float | None = Field(None, description="'hinge' only: the term is max(x − knot, 0).")
    times: int | None = Field(
        None, ge=0, description="Multiply by this input (an interaction such as PM·RH)."
    )

    @model_validator(mode="after")
    def _knot_iff_hinge(self) -> Term:
        if (self.transform == "hinge") != (self.knot is not None):
            raise ValueError("a 'hinge' term needs a knot, and only a 'hinge' term has one")
        return self


class LinearModel(_Spec):
    type: Literal["linear"] = "linear"
    intercept: float = 0.0
    terms: tuple[Term, ...] = ()
    target_transform: Literal["identity", "log"] = Field(
        "identity", description="'log': the linear predictor is log(result) (power law)."
    )


class KoehlerModel(_Spec):
    """κ-Köhler growth correction; κ as defined in :data:`KAPPA_DEFINITION`."""

    type: Literal["koehler"] = "koehler"
    kappa: float = Field(ge=0.0, le=2.0, description="Hygroscopicity parameter κ "
                         "(Petters & Kreidenweis 2007, volume growth).")
    rh_input: int = Field(ge=1, description="Index of the relative-humidity input (%).")
    rh_clamp: tuple[float, float] = Field(
        (0.0, 95.0), description="RH is clamped to this range (%) before the correction."
    )

    @model_validator(mode="after")
    def _clamp_order(self) -> KoehlerModel:
        lo, hi = self.rh_clamp
        if not 0.0 <= lo < hi < 100.0:
            raise ValueError(f"rh_clamp {self.rh_clamp!r} must satisfy 0 <= low < high < 100")
        return self


class ChainModel(_Spec):
    type: Literal["chain"] = "chain"
    steps: tuple[ModelSpec, ...] = Field(min_length=1)


class EnsembleModel(_Spec):
    type: Literal["ensemble"] = "ensemble"
    members: tuple[ModelSpec, ...] = Field(min_length=1)
    weights: tuple[float, ...] | None = Field(None, description="Defaults to equal weights.")

    @model_validator(mode="after")
    def _weights_match(self) -> EnsembleModel:
        if self.weights is not None and len(self.weights) != len(self.members):
            raise ValueError(
                f"ensemble has {len(self.members)} members but {len(self.weights)} weights"
            )
        return self


ModelSpec = Annotated[
    LinearModel | KoehlerModel | ChainModel | EnsembleModel, Field(discriminator="type")
]
ChainModel.model_rebuild()
EnsembleModel.model_rebuild()


class CalibrationMathError(ValueError):
    """An input the model cannot use (log of a non-positive value, RH ≥ 100 % unclamped...)."""


def koehler_dry(pm: float, rh: float, kappa: float, rh_lo: float, rh_hi: float) -> float:
    """Hygroscopic-growth correction of an optical PM value for relative humidity ``rh`` (%)."""
    rh = min(max(rh, rh_lo), rh_hi)
    if rh <= 0.0:
        return pm
    return pm / (1.0 + kappa / (100.0 / rh - 1.0))


def _log(x: float) -> float:
    if x <= 0.0:
        raise CalibrationMathError(f"log of non-positive input {x!r}")
    return math.log(x)


def _compile_linear(spec: LinearModel) -> Evaluator:
    b0 = spec.intercept
    plain = [t for t in spec.terms if t.times is None]
    ident = tuple((t.input, t.coef) for t in plain if t.transform == "identity")
    logs = tuple((t.input, t.coef) for t in plain if t.transform == "log")
    hinges = tuple((t.input, t.knot or 0.0, t.coef) for t in plain if t.transform == "hinge")
    products = tuple(
        (t.input, t.times, t.transform == "hinge", t.knot or 0.0, t.coef)
        for t in spec.terms if t.times is not None and t.transform != "log"
    )
    if any(t.times is not None and t.transform == "log" for t in spec.terms):
        raise CalibrationMathError("a 'log' term cannot have 'times'")
    exp_target = spec.target_transform == "log"

    def evaluate(x: Sequence[float]) -> float:
        acc = b0
        for i, c in ident:
            acc += c * x[i]
        for i, c in logs:
            v = x[i]
            if v <= 0.0:
                raise CalibrationMathError(f"log of non-positive input {v!r}")
            acc += c * math.log(v)
        for i, k, c in hinges:
            v = x[i] - k
            if v > 0.0:
                acc += c * v
        for i, j, hinge, k, c in products:
            v = x[i]
            if hinge:
                v = v - k if v > k else 0.0
            acc += c * v * x[j]
        if exp_target:
            return math.exp(acc) if acc < 700.0 else math.inf
        return acc

    return evaluate


def _compile_koehler(spec: KoehlerModel) -> Evaluator:
    kappa = spec.kappa
    rh_i = spec.rh_input
    lo, hi = spec.rh_clamp

    def evaluate(x: Sequence[float]) -> float:
        return koehler_dry(x[0], x[rh_i], kappa, lo, hi)

    return evaluate


def _compile_chain(spec: ChainModel) -> Evaluator:
    steps = tuple(compile_model(s) for s in spec.steps)

    def evaluate(x: Sequence[float]) -> float:
        values = list(x)
        for step in steps:
            values[0] = step(values)
        return values[0]

    return evaluate


def _compile_ensemble(spec: EnsembleModel) -> Evaluator:
    members = tuple(compile_model(m) for m in spec.members)
    n = len(members)
    weights = spec.weights or tuple(1.0 / n for _ in members)
    total = sum(weights)
    pairs = tuple(zip(members, (w / total for w in weights), strict=True))

    def evaluate(x: Sequence[float]) -> float:
        acc = 0.0
        for member, w in pairs:
            acc += w * member(x)
        return acc

    return evaluate


def compile_model(spec: LinearModel | KoehlerModel | ChainModel | EnsembleModel) -> Evaluator:
    """Turn a validated spec into a closure ``f(inputs) -> value``.

    The closure raises :class:`CalibrationMathError` for inputs outside its mathematical domain.
    """
    if isinstance(spec, LinearModel):
        return _compile_linear(spec)
    if isinstance(spec, KoehlerModel):
        return _compile_koehler(spec)
    if isinstance(spec, ChainModel):
        return _compile_chain(spec)
    return _compile_ensemble(spec)


def max_input_index(spec: LinearModel | KoehlerModel | ChainModel | EnsembleModel) -> int:
    """The highest input index a spec reads (used to check it against the artefact's inputs)."""
    if isinstance(spec, LinearModel):
        return max((max(t.input, t.times or 0) for t in spec.terms), default=0)
    if isinstance(spec, KoehlerModel):
        return spec.rh_input
    if isinstance(spec, ChainModel):
        return max(max_input_index(s) for s in spec.steps)
    return max(max_input_index(m) for m in spec.members)


def describe(spec: LinearModel | KoehlerModel | ChainModel | EnsembleModel) -> str:
    """A short human-readable name for reports (``power-law(3 terms)``...)."""
    if isinstance(spec, LinearModel):
        kind = "power-law" if spec.target_transform == "log" else "linear"
        if any(t.transform == "hinge" for t in spec.terms):
            kind = "piecewise-linear"
        return f"{kind}({len(spec.terms)} terms)"
    if isinstance(spec, KoehlerModel):
        return f"koehler(κ={spec.kappa:.3g})"
    if isinstance(spec, ChainModel):
        return " → ".join(describe(s) for s in spec.steps)
    return "blend[" + ", ".join(describe(m) for m in spec.members) + "]"
