"""Fitting candidate calibration models and choosing one by forward-chaining validation.

Candidates (numpy least squares; "robust" variants use Huber IRLS):

- ``offset-gain``: ``y = b0 + b1·x0`` (raw value only);
- ``linear``: multilinear in all inputs (raw value, T, RH, other co-measured signals);
- ``power-law``: ``log y = b0 + Σ b_i·log x_i + Σ c_j·env_j`` — the usual response of
  metal-oxide and electrochemical cells; environmental inputs (T, RH, pressure) enter linearly;
- ``blend``: the mean of ``linear`` and ``power-law``, which hedges between the two shapes;
- ``koehler+linear``: for PM with an RH input, κ-Köhler growth correction (κ fitted on a grid)
  followed by a linear model in the remaining inputs.

The choice is made by blocked forward-chaining validation on the fitting data only: the data
are cut into ``n_blocks`` consecutive time blocks; fold *i* fits on blocks ``0..i-1`` and
scores on block *i*. A model never sees data later than what it is scored on. The candidate
with the lowest mean RMSE over the folds wins and is refitted on all fitting data.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from calibration.models import (
    ChainModel,
    EnsembleModel,
    KoehlerModel,
    LinearModel,
    Term,
    compile_model,
)

Spec = LinearModel | KoehlerModel | ChainModel | EnsembleModel
ENV_QUANTITIES = frozenset({"temperature", "humidity", "pressure"})
PM_QUANTITIES = frozenset({"pm1", "pm2_5", "pm4", "pm10", "pm1_cf1", "pm2_5_cf1", "pm10_cf1"})


class FitError(ValueError):
    """Not enough (usable) data to fit or validate."""


@dataclass(frozen=True)
class Problem:
    """What to fit: inputs (column 0 = raw value) and their quantities, the reference target."""

    X: np.ndarray  # (n, k)
    y: np.ndarray  # (n,)
    t: np.ndarray  # (n,) bin starts, UTC epoch seconds, increasing
    input_quantities: tuple[str, ...]
    rh_clamp: tuple[float, float] = (0.0, 95.0)

    @property
    def env(self) -> tuple[bool, ...]:
        return tuple(q in ENV_QUANTITIES for q in self.input_quantities)


def _solve(A: np.ndarray, y: np.ndarray, robust: bool) -> np.ndarray:
    beta: np.ndarray = np.linalg.lstsq(A, y, rcond=None)[0]
    if not robust:
        return beta
    for _ in range(30):  # Huber IRLS, k = 1.345 (95 % efficiency under normal errors)
        r = y - A @ beta
        scale = float(np.median(np.abs(r - np.median(r)))) / 0.6745 + 1e-12
        w = np.minimum(1.0, 1.345 * scale / np.maximum(np.abs(r), 1e-12))
        sw = np.sqrt(w)
        new = np.linalg.lstsq(A * sw[:, None], y * sw, rcond=None)[0]
        if np.allclose(new, beta, rtol=1e-9, atol=1e-12):
            return new
        beta = new
    return beta


def _linear(X: np.ndarray, y: np.ndarray, cols: Sequence[int], robust: bool) -> LinearModel:
    A = np.column_stack([np.ones(len(y)), X[:, list(cols)]])
    beta = _solve(A, y, robust)
    terms = tuple(Term(input=c, transform="identity", coef=float(b)) for c, b in
                  zip(cols, beta[1:], strict=True))
    return LinearModel(intercept=float(beta[0]), terms=terms, target_transform="identity")


def _power(X: np.ndarray, y: np.ndarray, env: tuple[bool, ...], robust: bool) -> LinearModel:
    if (y <= 0).any() or any((X[:, i] <= 0).any() for i, e in enumerate(env) if not e):
        raise FitError("power-law needs positive reference and signal values")
    cols = [X[:, i] if e else np.log(X[:, i]) for i, e in enumerate(env)]
    A = np.column_stack([np.ones(len(y)), *cols])
    beta = _solve(A, np.log(y), robust)
    terms = tuple(
        Term(input=i, transform="identity" if e else "log", coef=float(b))
        for i, (e, b) in enumerate(zip(env, beta[1:], strict=True))
    )
    return LinearModel(intercept=float(beta[0]), terms=terms, target_transform="log")


def _koehler_linear(X: np.ndarray, y: np.ndarray, quantities: tuple[str, ...],
                    rh_clamp: tuple[float, float]) -> ChainModel:
    rh_i = quantities.index("humidity")
    others = [i for i in range(1, X.shape[1]) if i != rh_i]
    rh = np.clip(X[:, rh_i], *rh_clamp)
    best: tuple[float, ChainModel] | None = None
    for kappa in np.arange(0.0, 1.0001, 0.02):
        dry = X[:, 0] / (1.0 + (kappa / 1.65) / (100.0 / np.maximum(rh, 1e-9) - 1.0))
        Xd = X.copy()
        Xd[:, 0] = dry
        lin = _linear(Xd, y, [0, *others], robust=False)
        pred = _predict(lin, Xd)
        sse = float(((pred - y) ** 2).sum())
        if best is None or sse < best[0]:
            koehler = KoehlerModel(kappa=round(float(kappa), 4), rh_input=rh_i, rh_clamp=rh_clamp)
            best = (sse, ChainModel(steps=(koehler, lin)))
    assert best is not None
    return best[1]


def _predict(spec: Spec, X: np.ndarray) -> np.ndarray:
    """Vectorised prediction (same maths as the gateway's compiled evaluator)."""
    if isinstance(spec, LinearModel):
        acc = np.full(X.shape[0], spec.intercept)
        for t in spec.terms:
            col = X[:, t.input]
            with np.errstate(divide="ignore", invalid="ignore"):
                acc = acc + t.coef * (np.log(col) if t.transform == "log" else col)
        if spec.target_transform == "log":
            with np.errstate(over="ignore"):
                return np.exp(np.minimum(acc, 700.0))
        return acc
    if isinstance(spec, KoehlerModel):
        lo, hi = spec.rh_clamp
        rh = np.clip(X[:, spec.rh_input], lo, hi)
        with np.errstate(all="ignore"):
            growth = 1.0 + (spec.kappa / 1.65) / (100.0 / rh - 1.0)
        return np.where(rh > 0, X[:, 0] / growth, X[:, 0])
    if isinstance(spec, ChainModel):
        Xc = X.copy()
        for step in spec.steps:
            Xc[:, 0] = _predict(step, Xc)
        return Xc[:, 0]
    weights = spec.weights or tuple(1.0 for _ in spec.members)
    total = sum(weights)
    return sum(  # type: ignore[return-value]
        (w / total) * _predict(m, X) for m, w in zip(spec.members, weights, strict=True)
    )


def predict(spec: Spec, X: np.ndarray) -> np.ndarray:
    return _predict(spec, X)


def _power_fitter(env: tuple[bool, ...], robust: bool) -> Callable[[np.ndarray, np.ndarray], Spec]:
    def fit(X: np.ndarray, y: np.ndarray) -> Spec:
        return _power(X, y, env, robust)

    return fit


def _blend_fitter(env: tuple[bool, ...], k: int,
                  robust: bool) -> Callable[[np.ndarray, np.ndarray], Spec]:
    def fit(X: np.ndarray, y: np.ndarray) -> Spec:
        members = (_linear(X, y, range(k), robust), _power(X, y, env, robust))
        return EnsembleModel(members=members, weights=None)

    return fit


def candidate_fitters(problem: Problem) -> dict[str, Callable[[np.ndarray, np.ndarray], Spec]]:
    """The candidate models applicable to this problem, by name."""
    env = problem.env
    k = problem.X.shape[1]
    q = problem.input_quantities
    out: dict[str, Callable[[np.ndarray, np.ndarray], Spec]] = {
        "offset-gain": lambda X, y: _linear(X, y, [0], robust=False),
    }
    if k > 1:
        out["linear"] = lambda X, y: _linear(X, y, range(k), robust=False)
        out["linear-robust"] = lambda X, y: _linear(X, y, range(k), robust=True)
    positive = bool((problem.y > 0).all()) and all(
        bool((problem.X[:, i] > 0).all()) for i, e in enumerate(env) if not e
    )
    if positive:
        for robust, suffix in ((False, ""), (True, "-robust")):
            out["power-law" + suffix] = _power_fitter(env, robust)
            out["blend" + suffix] = _blend_fitter(env, k, robust)
    if q[0] in PM_QUANTITIES and "humidity" in q[1:]:
        out["koehler+linear"] = lambda X, y: _koehler_linear(X, y, q, problem.rh_clamp)
    return out


@dataclass
class Fold:
    train_end_s: float  # last training timestamp
    valid_start_s: float  # first validation timestamp
    valid_end_s: float
    n_train: int
    n_valid: int


@dataclass
class Selection:
    chosen: str
    spec: Spec
    cv_rmse: dict[str, float]
    cv_fold_rmse: dict[str, list[float]]
    folds: list[Fold]
    skipped: dict[str, str] = field(default_factory=dict)


def forward_chaining_folds(t: np.ndarray, n_blocks: int = 5) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train indices, validation indices) per fold; training always precedes validation."""
    order = np.argsort(t, kind="stable")
    blocks = np.array_split(order, n_blocks)
    folds = []
    for i in range(1, n_blocks):
        train = np.concatenate(blocks[:i])
        folds.append((train, blocks[i]))
    return folds


def select_model(problem: Problem, n_blocks: int = 5,
                 only: Sequence[str] | None = None) -> Selection:
    """Score every candidate by forward-chaining validation and refit the winner on all data."""
    n = problem.y.size
    if n < 10 * n_blocks:
        raise FitError(f"only {n} aligned samples; need at least {10 * n_blocks} to fit and validate")
    fitters = candidate_fitters(problem)
    if only:
        unknown = sorted(set(only) - set(fitters))
        if unknown:
            raise FitError(f"model(s) {unknown} not applicable; candidates here: {sorted(fitters)}")
        fitters = {k: v for k, v in fitters.items() if k in only}
    folds = forward_chaining_folds(problem.t, n_blocks)
    fold_info = [
        Fold(float(problem.t[tr].max()), float(problem.t[va].min()), float(problem.t[va].max()),
             int(tr.size), int(va.size))
        for tr, va in folds
    ]
    scores: dict[str, float] = {}
    per_fold: dict[str, list[float]] = {}
    skipped: dict[str, str] = {}
    for name, fitter in fitters.items():
        rmses = []
        try:
            for tr, va in folds:
                spec = fitter(problem.X[tr], problem.y[tr])
                pred = _predict(spec, problem.X[va])
                rmses.append(float(np.sqrt(np.mean((pred - problem.y[va]) ** 2))))
        except (FitError, np.linalg.LinAlgError) as exc:
            skipped[name] = str(exc)
            continue
        score = float(np.mean(rmses))
        if not math.isfinite(score):
            skipped[name] = "non-finite validation error"
            continue
        scores[name] = score
        per_fold[name] = rmses
    if not scores:
        raise FitError(f"no candidate model could be fitted: {skipped}")
    chosen = min(scores, key=scores.__getitem__)
    spec = fitters[chosen](problem.X, problem.y)
    compile_model(spec)  # the gateway must be able to run it
    return Selection(chosen, spec, scores, per_fold, fold_info, skipped)
