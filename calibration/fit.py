"""Fitting candidate calibration models and choosing one by forward-chaining validation.

Candidates (numpy least squares; "robust" variants use Huber IRLS), see :data:`MODELS`. A
candidate that does not apply to the data is not silently dropped: :func:`candidates` returns
it with the reason (e.g. "power-law needs positive values: 2 reference values ≤ 0"), and the
CLI writes those reasons into the artefact's ``validation.skipped``.

The choice is made by blocked forward-chaining validation on the fitting data only: the samples
(one per sensor and interval) are cut into ``n_blocks`` consecutive time blocks; fold *i* fits
on blocks ``0..i-1`` and scores RMSE on every sample of block *i*. A model never sees data later
than what it is scored on. The candidate with the lowest mean RMSE over the folds wins and is
refitted on all fitting data, except that a non-linear (piecewise) candidate must beat the best
linear-family candidate by :data:`NONLINEAR_MARGIN`, so the extra shape is only taken when the
validation says it pays. With several co-located sensors, leave-one-sensor-out scores (fit on the
other sensors, score the held-out one) show how the calibration transfers to a unit it has
never seen.
"""

from __future__ import annotations

import itertools
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
Fitter = Callable[[np.ndarray, np.ndarray], Spec]
ENV_QUANTITIES = frozenset({"temperature", "humidity", "pressure"})
PM_QUANTITIES = frozenset({"pm1", "pm2_5", "pm4", "pm10", "pm1_cf1", "pm2_5_cf1", "pm10_cf1"})
RH_KNOTS = (50.0, 65.0, 80.0)  # piecewise-linear RH basis (hygroscopic growth bends near 50-80 %)
NONLINEAR = frozenset({"rh-hinge"})
NONLINEAR_MARGIN = 0.02  # a piecewise model must beat the best linear one by 2 % RMSE

MODELS: dict[str, str] = {
    "offset-gain": "y = b0 + b1·signal (raw value only)",
    "linear": "multilinear in all inputs (signal, T, RH, ...)",
    "linear-robust": "linear, Huber-weighted (outliers count less)",
    "power-law": "log y = b0 + Σ b·log(signal inputs) + Σ c·T/RH (metal-oxide cells)",
    "power-law-robust": "power-law, Huber-weighted",
    "blend": "mean of linear and power-law",
    "blend-robust": "mean of linear-robust and power-law-robust",
    "koehler": "κ-Köhler growth correction only (PM with an RH input)",
    "koehler+gain": "κ-Köhler, then offset/gain",
    "koehler+linear": "κ-Köhler, then linear in the other inputs",
    "rh-hinge": "piecewise-linear in RH: gain and offset bend at RH 50/65/80 % (PM with RH)",
}


class FitError(ValueError):
    """Not enough (usable) data to fit or validate."""


@dataclass(frozen=True)
class Problem:
    """What to fit: inputs (column 0 = raw value) and their quantities, the reference target.

    One row per sensor and interval; ``groups`` names the sensor of each row (None: one sensor).
    """

    X: np.ndarray  # (n, k)
    y: np.ndarray  # (n,)
    t: np.ndarray  # (n,) interval starts, UTC epoch seconds
    input_quantities: tuple[str, ...]
    rh_clamp: tuple[float, float] = (0.0, 95.0)
    groups: np.ndarray | None = None

    @property
    def env(self) -> tuple[bool, ...]:
        return tuple(q in ENV_QUANTITIES for q in self.input_quantities)

    @property
    def rh_index(self) -> int | None:
        q = self.input_quantities
        return q.index("humidity") if "humidity" in q[1:] else None


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


def _fit_terms(X: np.ndarray, y: np.ndarray, terms: Sequence[Term], robust: bool = False,
               log_target: bool = False) -> LinearModel:
    """Least squares for the coefficients of ``terms`` (their ``coef`` is ignored)."""
    shape = LinearModel(intercept=0.0, terms=tuple(terms))
    A = np.column_stack([np.ones(len(y)), *(_term_values(t, X) for t in terms)])
    beta = _solve(A, np.log(y) if log_target else y, robust)
    return LinearModel(
        intercept=float(beta[0]),
        terms=tuple(t.model_copy(update={"coef": float(b)}) for t, b in
                    zip(shape.terms, beta[1:], strict=True)),
        target_transform="log" if log_target else "identity",
    )


def _linear(X: np.ndarray, y: np.ndarray, cols: Sequence[int], robust: bool) -> LinearModel:
    return _fit_terms(X, y, [Term(input=c, coef=0.0) for c in cols], robust)


def _power(X: np.ndarray, y: np.ndarray, env: tuple[bool, ...], robust: bool) -> LinearModel:
    problem = _power_law_problem(X, y, env)
    if problem:
        raise FitError(problem)
    terms = [Term(input=i, transform="identity" if e else "log", coef=0.0)
             for i, e in enumerate(env)]
    return _fit_terms(X, y, terms, robust, log_target=True)


def _power_law_problem(X: np.ndarray, y: np.ndarray, env: tuple[bool, ...]) -> str:
    """Why a power law cannot be fitted here ('' if it can)."""
    bad_ref = int((y <= 0).sum())
    if bad_ref:
        return (f"power-law needs positive values: {bad_ref} reference value(s) ≤ 0 "
                f"(min {float(y.min()):.4g})")
    for i, e in enumerate(env):
        bad = int((X[:, i] <= 0).sum()) if not e else 0
        if bad:
            return f"power-law needs positive values: {bad} value(s) ≤ 0 in input {i}"
    return ""


def _growth(rh: np.ndarray, kappa: float) -> np.ndarray:
    with np.errstate(all="ignore"):
        g = 1.0 + kappa / (100.0 / rh - 1.0)
    return np.where(rh > 0, g, 1.0)


def _koehler(X: np.ndarray, y: np.ndarray, rh_i: int, rh_clamp: tuple[float, float],
             then: Callable[[np.ndarray, np.ndarray], LinearModel] | None) -> Spec:
    """κ by a coarse-to-fine grid search minimising the squared error of the whole chain."""
    rh = np.clip(X[:, rh_i], *rh_clamp)

    def sse(kappa: float) -> tuple[float, float, Spec]:
        koehler = KoehlerModel(kappa=round(float(kappa), 4), rh_input=rh_i, rh_clamp=rh_clamp)
        dry = X[:, 0] / _growth(rh, koehler.kappa)
        if then is None:
            return float(((dry - y) ** 2).sum()), koehler.kappa, koehler
        Xd = X.copy()
        Xd[:, 0] = dry
        step = then(Xd, y)
        err = float(((_predict(step, Xd) - y) ** 2).sum())
        return err, koehler.kappa, ChainModel(steps=(koehler, step))

    coarse = min((sse(k) for k in np.arange(0.0, 1.5001, 0.05)), key=lambda r: r[0])
    centre = coarse[1]
    fine = [sse(k) for k in np.arange(max(0.0, centre - 0.05), min(2.0, centre + 0.05) + 1e-9, 0.005)]
    return min([coarse, *fine], key=lambda r: r[0])[2]


def _rh_hinge(X: np.ndarray, y: np.ndarray, rh_i: int) -> LinearModel:
    """Gain and offset piecewise-linear in RH: y = b0 + PM·(c0 + c1·RH + Σ c·(RH−k)+)
    + d·RH + Σ e·(RH−k)+ + other inputs linearly. Knots with < 5 % of samples above are dropped
    (nothing to fit them on)."""
    rh = X[:, rh_i]
    knots = [k for k in RH_KNOTS if (rh > k).mean() >= 0.05 and (rh <= k).mean() >= 0.05]
    terms = [Term(input=0, coef=0.0), Term(input=0, coef=0.0, times=rh_i),
             Term(input=rh_i, coef=0.0)]
    for k in knots:
        terms += [Term(input=rh_i, transform="hinge", knot=k, coef=0.0, times=0),
                  Term(input=rh_i, transform="hinge", knot=k, coef=0.0)]
    terms += [Term(input=i, coef=0.0) for i in range(1, X.shape[1]) if i != rh_i]
    return _fit_terms(X, y, terms)


def _term_values(t: Term, X: np.ndarray) -> np.ndarray:
    col = X[:, t.input]
    with np.errstate(divide="ignore", invalid="ignore"):
        if t.transform == "log":
            v = np.log(col)
        elif t.transform == "hinge":
            v = np.maximum(col - (t.knot or 0.0), 0.0)
        else:
            v = col
    return v * X[:, t.times] if t.times is not None else v


def _predict(spec: Spec, X: np.ndarray) -> np.ndarray:
    """Vectorised prediction (same maths as the gateway's compiled evaluator)."""
    if isinstance(spec, LinearModel):
        acc = np.full(X.shape[0], spec.intercept)
        for t in spec.terms:
            acc = acc + t.coef * _term_values(t, X)
        if spec.target_transform == "log":
            with np.errstate(over="ignore"):
                return np.exp(np.minimum(acc, 700.0))
        return acc
    if isinstance(spec, KoehlerModel):
        rh = np.clip(X[:, spec.rh_input], *spec.rh_clamp)
        return X[:, 0] / _growth(rh, spec.kappa)
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


@dataclass(frozen=True)
class Candidates:
    fitters: dict[str, Fitter]
    unavailable: dict[str, str]  # model name → why it does not apply to these data


def candidates(problem: Problem) -> Candidates:
    """Every model in :data:`MODELS`: a fitter when it applies, else the reason it does not."""
    env, k, q = problem.env, problem.X.shape[1], problem.input_quantities
    fitters: dict[str, Fitter] = {"offset-gain": lambda X, y: _linear(X, y, [0], robust=False)}
    unavailable: dict[str, str] = {}
    if k > 1:
        fitters["linear"] = lambda X, y: _linear(X, y, range(k), robust=False)
        fitters["linear-robust"] = lambda X, y: _linear(X, y, range(k), robust=True)
    else:
        for name in ("linear", "linear-robust"):
            unavailable[name] = "no co-input: identical to offset-gain"
    why_not_power = _power_law_problem(problem.X, problem.y, env)
    for robust, suffix in ((False, ""), (True, "-robust")):
        if why_not_power:
            unavailable["power-law" + suffix] = why_not_power
            unavailable["blend" + suffix] = why_not_power
            continue
        fitters["power-law" + suffix] = _power_fitter(env, robust)
        fitters["blend" + suffix] = _blend_fitter(env, k, robust)
    rh_i = problem.rh_index
    humid = ("koehler", "koehler+gain", "koehler+linear", "rh-hinge")
    if rh_i is None or q[0] not in PM_QUANTITIES:
        reason = (f"needs a PM signal, not {q[0]}" if q[0] not in PM_QUANTITIES else
                  "needs a humidity input (--input humidity=COLUMN)")
        unavailable.update(dict.fromkeys(humid, reason))
    else:
        others = [i for i in range(1, k) if i != rh_i]
        clamp = problem.rh_clamp
        fitters["koehler"] = lambda X, y: _koehler(X, y, rh_i, clamp, None)
        fitters["koehler+gain"] = lambda X, y: _koehler(
            X, y, rh_i, clamp, lambda Xd, yd: _linear(Xd, yd, [0], robust=False))
        fitters["koehler+linear"] = lambda X, y: _koehler(
            X, y, rh_i, clamp, lambda Xd, yd: _linear(Xd, yd, [0, *others], robust=False))
        fitters["rh-hinge"] = lambda X, y: _rh_hinge(X, y, rh_i)
    return Candidates(fitters, unavailable)


def candidate_fitters(problem: Problem) -> dict[str, Fitter]:
    """The candidate models applicable to this problem, by name."""
    return candidates(problem).fitters


def _power_fitter(env: tuple[bool, ...], robust: bool) -> Fitter:
    def fit(X: np.ndarray, y: np.ndarray) -> Spec:
        return _power(X, y, env, robust)

    return fit


def _blend_fitter(env: tuple[bool, ...], k: int, robust: bool) -> Fitter:
    def fit(X: np.ndarray, y: np.ndarray) -> Spec:
        members = (_linear(X, y, range(k), robust), _power(X, y, env, robust))
        return EnsembleModel(members=members, weights=None)

    return fit


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
    loso_rmse: dict[str, float] = field(default_factory=dict)  # held-out sensor → RMSE
    fitter: Fitter | None = None  # the chosen candidate's fitter (for per-sensor fits)


def forward_chaining_folds(t: np.ndarray, n_blocks: int = 5) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train indices, validation indices) per fold; training always precedes validation.

    Block edges fall between distinct timestamps, so the samples of several sensors for one
    interval are never split between training and validation.
    """
    order = np.argsort(t, kind="stable")
    ts = t[order]
    edges = [0]
    for i in range(1, n_blocks):
        cut = max(round(i * ts.size / n_blocks), edges[-1])
        while 0 < cut < ts.size and ts[cut] == ts[cut - 1]:
            cut += 1
        edges.append(min(cut, ts.size))
    edges.append(ts.size)
    blocks = [order[a:b] for a, b in itertools.pairwise(edges)]
    folds = []
    for i in range(1, n_blocks):
        train = np.concatenate(blocks[:i])
        if train.size and blocks[i].size:
            folds.append((train, blocks[i]))
    return folds


def _rmse(spec: Spec, X: np.ndarray, y: np.ndarray) -> float:
    return float(np.sqrt(np.mean((_predict(spec, X) - y) ** 2)))


def leave_one_sensor_out(problem: Problem, fitter: Fitter) -> dict[str, float]:
    """RMSE on each sensor's own intervals, the model fitted on all the other sensors."""
    if problem.groups is None:
        return {}
    out: dict[str, float] = {}
    names = sorted(set(problem.groups.tolist()))
    if len(names) < 2:
        return {}
    for name in names:
        held = problem.groups == name
        try:
            spec = fitter(problem.X[~held], problem.y[~held])
        except (FitError, np.linalg.LinAlgError):
            continue
        out[str(name)] = _rmse(spec, problem.X[held], problem.y[held])
    return out


def per_sensor_fits(problem: Problem, fitter: Fitter) -> dict[str, Spec]:
    """The chosen model family fitted on each sensor's own samples (sensors with too few
    samples, or where the fit fails, are left out)."""
    if problem.groups is None:
        return {}
    out: dict[str, Spec] = {}
    for name in sorted(set(problem.groups.tolist())):
        own = problem.groups == name
        if int(own.sum()) < 10 * problem.X.shape[1]:
            continue
        try:
            out[str(name)] = fitter(problem.X[own], problem.y[own])
        except (FitError, np.linalg.LinAlgError):
            continue
    return out


def select_model(problem: Problem, n_blocks: int = 5,
                 only: Sequence[str] | None = None) -> Selection:
    """Score every candidate by forward-chaining validation and refit the winner on all data."""
    n = problem.y.size
    if n < 10 * n_blocks:
        raise FitError(f"only {n} aligned samples; need at least {10 * n_blocks} to fit and validate")
    found = candidates(problem)
    fitters = found.fitters
    skipped = dict(found.unavailable)
    if only:
        unknown = sorted(set(only) - set(MODELS))
        if unknown:
            raise FitError(f"unknown model(s) {unknown}; models: {', '.join(MODELS)}")
        inapplicable = {m: skipped[m] for m in only if m in skipped}
        if len(inapplicable) == len(set(only)):
            raise FitError("none of the requested models applies here: " + "; ".join(
                f"{m}: {why}" for m, why in inapplicable.items()))
        skipped = {m: why for m, why in skipped.items() if m in only}
        for name in set(fitters) - set(only):
            skipped[name] = "not requested (--models)"
        fitters = {k: v for k, v in fitters.items() if k in only}
    folds = forward_chaining_folds(problem.t, n_blocks)
    fold_info = [
        Fold(float(problem.t[tr].max()), float(problem.t[va].min()), float(problem.t[va].max()),
             int(tr.size), int(va.size))
        for tr, va in folds
    ]
    scores: dict[str, float] = {}
    per_fold: dict[str, list[float]] = {}
    for name, fitter in fitters.items():
        try:
            rmses = [_rmse(fitter(problem.X[tr], problem.y[tr]), problem.X[va], problem.y[va])
                     for tr, va in folds]
        except (FitError, np.linalg.LinAlgError) as exc:
            skipped[name] = str(exc)
            continue
        score = float(np.mean(rmses))
        if not math.isfinite(score):
            skipped[name] = "non-finite validation error (a fold predicted NaN/∞)"
            continue
        scores[name] = score
        per_fold[name] = rmses
    if not scores:
        raise FitError("no candidate model could be fitted: " + "; ".join(
            f"{m}: {why}" for m, why in skipped.items()))
    chosen = _choose(scores, skipped)
    spec = fitters[chosen](problem.X, problem.y)
    compile_model(spec)  # the gateway must be able to run it
    loso = leave_one_sensor_out(problem, fitters[chosen])
    return Selection(chosen, spec, scores, per_fold, fold_info, skipped, loso, fitters[chosen])


def _choose(scores: dict[str, float], skipped: dict[str, str]) -> str:
    """Lowest forward-chaining RMSE; a non-linear model needs a margin over the linear ones."""
    best = min(scores, key=scores.__getitem__)
    plain = {k: v for k, v in scores.items() if k not in NONLINEAR}
    if best in NONLINEAR and plain:
        runner_up = min(plain, key=plain.__getitem__)
        if scores[best] > (1.0 - NONLINEAR_MARGIN) * plain[runner_up]:
            skipped[best] = (f"validation RMSE {scores[best]:.4g} is not {100 * NONLINEAR_MARGIN:.0f} "
                             f"% below {runner_up} ({plain[runner_up]:.4g}): the simpler model is kept")
            return runner_up
    return best
