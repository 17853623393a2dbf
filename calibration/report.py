"""Hand-over report (HTML + PNG figures) and drift check for a calibration artefact."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from calibration.artefact import Artefact
from calibration.fit import predict
from calibration.metrics import LIMIT_VALUES, Coverage, limit_coverage, metrics
from calibration.models import ChainModel, EnsembleModel, KoehlerModel, ModelSpec
from edge.quantities import QUANTITIES

LONG_CAMPAIGN_DAYS = 45  # longer: the time series shows daily means (one panel per sensor)


def _input_matrix(artefact: Artefact, values: dict[str, np.ndarray]) -> np.ndarray:
    missing = [i.name for i in artefact.inputs if i.name not in values]
    if missing:
        raise ValueError(f"data lack the artefact's input column(s) {missing}")
    return np.column_stack([values[i.name] for i in artefact.inputs])


def out_of_range_mask(artefact: Artefact, X: np.ndarray) -> np.ndarray:
    mask = np.zeros(X.shape[0], dtype=bool)
    for j, spec in enumerate(artefact.inputs):
        if spec.range is not None:
            mask |= (X[:, j] < spec.range[0]) | (X[:, j] > spec.range[1])
    return mask


@dataclass
class Evaluation:
    t: np.ndarray
    reference: np.ndarray
    raw: np.ndarray
    calibrated: np.ndarray
    X: np.ndarray
    out_of_range: np.ndarray
    metrics_raw: dict[str, float]
    metrics_cal: dict[str, float]
    env: dict[str, tuple[str, np.ndarray]]  # name → (quantity, values): T/RH for residual plots
    groups: np.ndarray | None = None  # sensor id per sample
    per_sensor: dict[str, dict[str, float]] | None = None  # metrics on each sensor's intervals
    coverage: Coverage | None = None


ENV_QUANTITIES = ("temperature", "humidity")


def evaluate(artefact: Artefact, t: np.ndarray, values: dict[str, np.ndarray],
             reference: np.ndarray,
             extras: dict[str, tuple[str, np.ndarray]] | None = None,
             groups: np.ndarray | None = None) -> Evaluation:
    """Apply the artefact to aligned data, one sample per sensor and interval. ``extras``: T/RH
    columns that are not model inputs but are wanted in the residual plots."""
    X = _input_matrix(artefact, values)
    cal = predict(artefact.model, X)
    ok = np.isfinite(cal)
    X, cal, ref, tt = X[ok], cal[ok], reference[ok], t[ok]
    g = groups[ok] if groups is not None else None
    per_sensor = None
    if g is not None:
        per_sensor = {
            str(name): metrics(ref[g == name], cal[g == name], artefact.quantity)
            for name in sorted(set(g.tolist())) if int((g == name).sum()) >= 3
        }
    env = {s.name: (s.quantity, X[:, j]) for j, s in enumerate(artefact.inputs)
           if s.quantity in ENV_QUANTITIES}
    for name, (qty, arr) in (extras or {}).items():
        if qty in ENV_QUANTITIES and name not in env:
            env[name] = (qty, arr[ok])
    return Evaluation(
        tt, ref, X[:, 0], cal, X, out_of_range_mask(artefact, X),
        metrics(ref, X[:, 0], artefact.quantity), metrics(ref, cal, artefact.quantity), env,
        g, per_sensor, limit_coverage(ref, artefact.quantity),
    )


def describe_coefficients(artefact: Artefact) -> list[str]:
    """The fitted model as readable lines: κ, intercept and every term with its input name."""
    names = [i.name for i in artefact.inputs]
    return _describe(artefact.model, names, "")


def _describe(spec: ModelSpec, names: list[str], indent: str) -> list[str]:
    if isinstance(spec, KoehlerModel):
        lo, hi = spec.rh_clamp
        return [f"{indent}κ-Köhler: κ = {spec.kappa:.4g} (Petters & Kreidenweis 2007), RH from "
                f"'{names[spec.rh_input]}' clamped to {lo:g}–{hi:g} %"]
    if isinstance(spec, ChainModel):
        out = [f"{indent}chain (each step's output feeds the next as '{names[0]}'):"]
        for step in spec.steps:
            out += _describe(step, names, indent + "  ")
        return out
    if isinstance(spec, EnsembleModel):
        out = [f"{indent}mean of:"]
        for member in spec.members:
            out += _describe(member, names, indent + "  ")
        return out
    target = "log(y)" if spec.target_transform == "log" else "y"
    out = [f"{indent}{target} = {spec.intercept:+.6g}"]
    for t in spec.terms:
        x = names[t.input]
        if t.transform == "hinge":
            term = f"max({x} − {t.knot or 0.0:g}, 0)"
        else:
            term = f"log({x})" if t.transform == "log" else x
        if t.times is not None:
            term += f" · {names[t.times]}"
        out.append(f"{indent}    {t.coef:+.6g} · {term}")
    return out


def _figures(ev: Evaluation, artefact: Artefact, out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    unit = QUANTITIES[artefact.quantity].unit_symbol
    files = []

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    axes[0].scatter(ev.reference, ev.raw, s=3, alpha=0.4)
    axes[0].set(title="Raw vs reference", xlabel=f"reference ({unit})",
                ylabel=f"raw {artefact.inputs[0].name}")
    inside = ~ev.out_of_range
    axes[1].scatter(ev.reference[inside], ev.calibrated[inside], s=3, alpha=0.4,
                    label="inputs in fitted range")
    if ev.out_of_range.any():
        axes[1].scatter(ev.reference[ev.out_of_range], ev.calibrated[ev.out_of_range], s=3,
                        alpha=0.4, color="tab:red", label="input outside fitted range")
    hi = float(max(ev.reference.max(), ev.calibrated.max()))
    axes[1].plot([0, hi], [0, hi], "k--", lw=1, label="1:1")
    axes[1].set(title="Calibrated vs reference", xlabel=f"reference ({unit})",
                ylabel=f"calibrated ({unit})")
    axes[1].legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "scatter.png", dpi=110)
    files.append("scatter.png")
    plt.close(fig)

    _timeseries(ev, unit, out_dir, plt)
    files.append("timeseries.png")

    env = sorted(ev.env.items(), key=lambda kv: kv[1][0], reverse=True)  # temperature first
    if env:
        resid = ev.calibrated - ev.reference
        fig, axes = plt.subplots(1, len(env), figsize=(5 * len(env), 4), squeeze=False)
        for ax, (name, (qty, column)) in zip(axes[0], env, strict=True):
            ax.scatter(column, resid, s=3, alpha=0.4)
            ax.axhline(0, color="black", lw=1)
            env_unit = QUANTITIES[qty].unit_symbol
            ax.set(title=f"Residual vs {name}", xlabel=f"{name} ({env_unit})",
                   ylabel=f"calibrated − reference ({unit})")
        fig.tight_layout()
        fig.savefig(out_dir / "residuals_env.png", dpi=110)
        files.append("residuals_env.png")
        plt.close(fig)
    return files


def _series_by_sensor(ev: Evaluation) -> list[tuple[str, np.ndarray]]:
    if ev.groups is None:
        return [("", np.ones(ev.t.size, dtype=bool))]
    return [(str(n), ev.groups == n) for n in sorted(set(ev.groups.tolist()))]


def daily_means(t: np.ndarray, *columns: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Per UTC day: day starts and the mean of each column (days without data are absent)."""
    day = np.floor(t / 86400.0) * 86400.0
    uniq, inverse = np.unique(day, return_inverse=True)
    counts = np.bincount(inverse, minlength=uniq.size)
    return uniq, [np.bincount(inverse, weights=c, minlength=uniq.size) / counts for c in columns]


def _timeseries(ev: Evaluation, unit: str, out_dir: Path, plt: Any) -> None:
    """Short campaigns: every sample. Long ones: daily means, one small panel per sensor, so a
    year of 18 sensors stays readable."""
    span_days = float(ev.t.max() - ev.t.min()) / 86400 if ev.t.size else 0.0
    long = span_days > LONG_CAMPAIGN_DAYS
    series = _series_by_sensor(ev)
    rows = len(series) if long else 1
    fig, axes = plt.subplots(rows, 1, figsize=(11, 2.2 * rows if long else 4), sharex=True,
                             squeeze=False)
    for ax, (name, rows_mask) in zip(axes[:, 0], series if long else [("", None)], strict=True):
        mask = rows_mask if rows_mask is not None else np.ones(ev.t.size, dtype=bool)
        t, ref, cal, raw = ev.t[mask], ev.reference[mask], ev.calibrated[mask], ev.raw[mask]
        if long:
            t, (ref, cal, raw) = daily_means(t, ref, cal, raw)
        step = float(np.median(np.diff(t))) if t.size > 1 else 1.0
        gap = np.concatenate([[False], np.diff(t) > 2 * step])  # break lines at gaps
        dates = np.array([datetime.fromtimestamp(float(x), UTC) for x in t])
        ax.plot(dates, np.where(gap, np.nan, ref), lw=0.7, color="black", label="reference")
        ax.plot(dates, np.where(gap, np.nan, cal), lw=0.7, color="tab:orange",
                label="calibrated")
        if long:
            ax.plot(dates, np.where(gap, np.nan, raw), lw=0.5, color="tab:gray", alpha=0.6,
                    label="raw")
            ax.set_ylabel(unit)
            if name:
                ax.set_title(f"sensor {name}: daily means", fontsize=9, loc="left")
    axes[0, 0].legend(fontsize=8, loc="upper right")
    if not long:
        axes[0, 0].set(title="Time series (all samples)", ylabel=unit)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(out_dir / "timeseries.png", dpi=100)
    plt.close(fig)


def _row(name: str, m: dict[str, float]) -> str:
    w = m.get("expanded_uncertainty", math.nan)
    cells = [name, f"{m['r2']:.3f}", f"{m['rmse']:.3g}", f"{m['mae']:.3g}", f"{m['bias']:+.3g}",
             f"{m['crmse']:.3g}", f"{m['orth_slope']:.3f}", f"{m['orth_intercept']:+.3g}",
             "–" if math.isnan(w) else f"{100 * w:.1f} %"]
    return "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>"


def _raw_comparison(ev: Evaluation) -> tuple[str, str]:
    """A metrics row for the raw values when they are in the reference's units, else a note."""
    ref_med = float(np.median(ev.reference))
    raw_med = float(np.median(ev.raw))
    if ref_med > 0 and 0.2 <= raw_med / ref_med <= 5.0:
        return _row("raw", ev.metrics_raw), ""
    r = float(np.corrcoef(ev.raw, ev.reference)[0, 1])
    return "", (f"<p>The raw values are in sensor units (median {raw_med:.4g} vs reference "
                f"{ref_med:.4g}); their correlation with the reference is r = {r:.3f}.</p>")


def write_report(artefact: Artefact, ev: Evaluation, out_dir: Path, title: str = "") -> Path:
    """Write ``index.html`` and PNG figures into ``out_dir``; return the HTML path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = _figures(ev, artefact, out_dir)
    q = artefact.quantity
    dqo_text = ""
    if q in LIMIT_VALUES:
        _, dqo, label = LIMIT_VALUES[q]
        w = ev.metrics_cal.get("expanded_uncertainty", math.nan)
        verdict = "meets" if w <= dqo else "does NOT meet"
        dqo_text = (
            f"<p>Expanded relative uncertainty at the {html.escape(label)} (orthogonal regression, "
            f"EU Guide to the Demonstration of Equivalence): <b>{100 * w:.1f} %</b>, which "
            f"<b>{verdict}</b> the data-quality objective for indicative measurements "
            f"({100 * dqo:.0f} %, Directive 2008/50/EC).</p>"
        )
    period = (f"{datetime.fromtimestamp(float(ev.t[0]), UTC):%Y-%m-%d %H:%M} – "
              f"{datetime.fromtimestamp(float(ev.t[-1]), UTC):%Y-%m-%d %H:%M} UTC")
    fit = artefact.fit
    val = fit.validation
    cv = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v:.4g}</td></tr>"
        for k, v in sorted(val.get("cv_rmse", {}).items(), key=lambda kv: kv[1])
    )
    raw_row, raw_note = _raw_comparison(ev)
    coef_text = html.escape("\n".join(describe_coefficients(artefact)))
    coverage_text = ""
    if ev.coverage is not None:
        warn = ev.coverage.warning(QUANTITIES[q].unit_symbol)
        coverage_text = (
            f"<p>Data near the limit value: {ev.coverage.n_above} of {ev.coverage.n} samples "
            f"({100 * ev.coverage.fraction:.1f} %) have a reference ≥ {ev.coverage.threshold:g} "
            f"{html.escape(QUANTITIES[q].unit_symbol)}.</p>"
            + (f'<p style="color:#a00"><b>Warning:</b> {html.escape(warn)}.</p>' if warn else "")
        )
    sensor_rows = "".join(_row(f"sensor {name}", m) for name, m in (ev.per_sensor or {}).items())
    loso = val.get("leave_one_sensor_out_rmse") or {}
    loso_text = ("<p>Leave-one-sensor-out RMSE (fitted on the other sensors): "
                 + ", ".join(f"{html.escape(k)} {v:.3g}" for k, v in loso.items()) + "</p>"
                 if loso else "")
    skipped = "".join(f"<li><code>{html.escape(k)}</code>: {html.escape(str(v))}</li>"
                      for k, v in (val.get("skipped") or {}).items())
    attribution = ""
    if "uci" in f"{fit.reference_station} {artefact.id}".lower():
        attribution = ("<p>Data: UCI Air Quality data set, De Vito et al., Sensors and Actuators B "
                       "129(2), 2008 (CC BY 4.0).</p>")
    body = f"""<!doctype html><html><head><meta charset="utf-8">
<title>Calibration report {html.escape(artefact.id)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:auto}}
table{{border-collapse:collapse}}td,th{{border:1px solid #bbb;padding:3px 8px}}</style></head><body>
<h1>Calibration report: {html.escape(title or artefact.id)}</h1>
<p>Artefact <code>{html.escape(artefact.id)}</code> version {html.escape(artefact.version)},
quantity {html.escape(q)} ({html.escape(QUANTITIES[q].unit_symbol)}), sensor model
{html.escape(artefact.sensor.model or 'any')} serial {html.escape(artefact.sensor.serial or 'any')},
sha256 <code>{html.escape((artefact.sha256 or '')[:16])}…</code>.<br>
Model: {html.escape(str(val.get('chosen', '')))} — fitted {html.escape(fit.period_start or '?')} to
{html.escape(fit.period_end or '?')} on {fit.n_samples} samples against
{html.escape(fit.reference_station or 'the reference')}.</p>
<h2>Evaluated period</h2><p>{period}, {ev.t.size} samples;
{int(ev.out_of_range.sum())} ({100 * ev.out_of_range.mean():.1f} %) have an input outside the fitted
range (flagged suspect on the gateway).</p>
<table><tr><th>values</th><th>R²</th><th>RMSE</th><th>MAE</th><th>mean bias</th><th>CRMSE</th>
<th>orth. slope</th><th>orth. intercept</th><th>expanded uncertainty</th></tr>
{raw_row}{_row('calibrated', ev.metrics_cal)}{sensor_rows}</table>{raw_note}
<p>Scores are computed on individual sensor-intervals (one sample per sensor and interval), never
on averages across sensors.</p>
{dqo_text}{coverage_text}
<h2>Model and coefficients</h2><pre>{coef_text}</pre>
<p>Maps <code>{html.escape(artefact.inputs[0].quantity)}</code> →
<code>{html.escape(q)}</code>.</p>
<h2>Model choice (forward-chaining validation on the fitting period)</h2>
<table><tr><th>candidate</th><th>mean RMSE over folds</th></tr>{cv}</table>
{loso_text}<p>Candidates not used, and why:</p><ul>{skipped}</ul>
<h2>Figures</h2>
{''.join(f'<p><img src="{f}" alt="{f}"></p>' for f in figures)}
{attribution}</body></html>"""
    path = out_dir / "index.html"
    path.write_text(body, encoding="utf-8")
    return path


@dataclass
class DriftResult:
    recommendation: str  # "keep", "adjust-offset", "refit"
    reasons: list[str]
    metrics_new: dict[str, float]
    fitted_rmse: float


def drift_check(artefact: Artefact, ev: Evaluation, tolerance: float = 1.5) -> DriftResult:
    """Compare a deployed calibration on a new co-location period with its own fit metrics.

    ``keep`` when the new RMSE stays within ``tolerance`` × the validation RMSE recorded at fit
    time; ``adjust-offset`` when the excess error is mostly a constant bias (CRMSE still within
    tolerance); ``refit`` otherwise, or when the orthogonal slope moved by more than 15 %.
    """
    m = ev.metrics_cal
    base = float(artefact.fit.metrics.get("cv_rmse") or artefact.fit.metrics.get("rmse") or math.nan)
    reasons: list[str] = []
    if not math.isfinite(base) or base <= 0:
        base = m["crmse"]
        reasons.append("artefact records no fit RMSE; using the new CRMSE as the baseline")
    slope_ok = abs(m["orth_slope"] - 1.0) <= 0.15
    if m["rmse"] <= tolerance * base and slope_ok:
        rec = "keep"
        reasons.append(f"RMSE {m['rmse']:.3g} ≤ {tolerance} × fitted {base:.3g}")
    elif m["crmse"] <= tolerance * base and slope_ok:
        rec = "adjust-offset"
        reasons.append(
            f"RMSE {m['rmse']:.3g} > {tolerance} × fitted {base:.3g}, but it is mostly a constant "
            f"bias {m['bias']:+.3g} (CRMSE {m['crmse']:.3g}): refit the offset"
        )
    else:
        rec = "refit"
        reasons.append(f"RMSE {m['rmse']:.3g} vs fitted {base:.3g}; CRMSE {m['crmse']:.3g}")
    if not slope_ok:
        reasons.append(f"orthogonal slope {m['orth_slope']:.3f} is outside 1 ± 0.15")
    frac = float(ev.out_of_range.mean())
    if frac > 0.2:
        reasons.append(f"{100 * frac:.0f} % of samples have inputs outside the fitted range")
        if rec == "keep":
            rec = "refit"
    return DriftResult(rec, reasons, m, base)
