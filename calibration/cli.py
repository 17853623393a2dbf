"""`duet-edge calibrate …`: fit, report and drift-check calibrations from co-location data."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from calibration.artefact import (
    Artefact,
    ArtefactError,
    FitInfo,
    InputSpec,
    SensorSpec,
    load_artefact,
    save_artefact,
)
from calibration.fit import FitError, Problem, candidate_fitters, predict, select_model
from calibration.io import (
    Aligned,
    DataError,
    TableSpec,
    align,
    export_outbox,
    read_aligned,
    write_aligned,
)
from calibration.metrics import metrics
from calibration.report import drift_check, evaluate, write_report
from edge.quantities import QUANTITIES

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False)

Opt = typer.Option


def _fail(msg: str) -> typer.Exit:
    typer.echo(f"error: {msg}", err=True)
    return typer.Exit(2)


def _parse_input(text: str) -> tuple[str, str, str]:
    """NAME=COLUMN[:QUANTITY]; the quantity defaults to NAME when NAME is a quantity code."""
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        raise _fail(f"--input {text!r} must look like NAME=COLUMN[:QUANTITY], e.g. humidity=RH")
    column, _, qty = rest.rpartition(":") if ":" in rest else (rest, "", "")
    qty = qty or name
    if qty not in QUANTITIES:
        raise _fail(f"--input {text!r}: quantity {qty!r} unknown; give NAME=COLUMN:QUANTITY with "
                    f"one of {', '.join(sorted(QUANTITIES))}")
    return name, column, qty


def _fmt(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@app.command()
def fit(
    sensor: Annotated[Path, Opt(help="Sensor CSV (or the gateway's CSV export).")],
    reference: Annotated[Path, Opt(help="Reference station CSV.")],
    signal: Annotated[str, Opt(help="Sensor column with the raw value to calibrate.")],
    ref_column: Annotated[str, Opt(help="Reference column (the target).")],
    quantity: Annotated[str, Opt(help="Quantity code calibrated, e.g. pm2_5, no2, co.")],
    out: Annotated[Path, Opt(help="Artefact JSON to write.")],
    input_: Annotated[list[str] | None, Opt("--input", help="Co-input NAME=COLUMN[:QUANTITY] "
                                            "from the sensor file, e.g. humidity=RH. Repeat.")] = None,
    extra: Annotated[list[str] | None, Opt(help="Column carried along for the report only "
                                           "(not a model input), e.g. humidity=RH. Repeat.")] = None,
    sensor_time: Annotated[str, Opt(help="Sensor time column(s), comma-separated.")] = "time",
    sensor_time_format: Annotated[str | None, Opt(help="strptime format; default ISO 8601.")] = None,
    sensor_tz: Annotated[str, Opt(help="Time zone of naive sensor timestamps.")] = "UTC",
    sensor_convention: Annotated[str, Opt(help="Sensor labels: begin|end of interval.")] = "begin",
    sensor_sep: Annotated[str | None, Opt(help="Separator (default: detect).")] = None,
    sensor_decimal: Annotated[str | None, Opt(help="Decimal mark . or , (default: detect).")] = None,
    sensor_flag_column: Annotated[str | None, Opt(help="Sensor validity-flag column.")] = None,
    sensor_flag_ok: Annotated[list[str] | None, Opt(help="Flag values meaning valid. Repeat.")] = None,
    ref_time: Annotated[str, Opt(help="Reference time column(s), comma-separated.")] = "time",
    ref_time_format: Annotated[str | None, Opt(help="strptime format; default ISO 8601.")] = None,
    ref_tz: Annotated[str, Opt(help="Time zone of naive reference timestamps.")] = "UTC",
    ref_convention: Annotated[str, Opt(help="Reference labels: begin|end (hour-ending).")] = "end",
    ref_sep: Annotated[str | None, Opt(help="Separator (default: detect).")] = None,
    ref_decimal: Annotated[str | None, Opt(help="Decimal mark . or , (default: detect).")] = None,
    ref_flag_column: Annotated[str | None, Opt(help="Reference validity-flag column.")] = None,
    ref_flag_ok: Annotated[list[str] | None, Opt(help="Flag values meaning valid. Repeat.")] = None,
    na: Annotated[list[str] | None, Opt(help="Extra missing-value marker, e.g. -200. Repeat.")] = None,
    period: Annotated[int, Opt(help="Common averaging period, seconds.")] = 3600,
    train_days: Annotated[float | None, Opt(help="Fit on the first N days only; report "
                                            "metrics on the rest (time-ordered hold-out).")] = None,
    models: Annotated[str | None, Opt(help="Restrict candidates, comma-separated.")] = None,
    cal_id: Annotated[str, Opt("--id", help="Artefact id.")] = "",
    version: Annotated[str, Opt(help="Artefact version.")] = "1",
    sensor_model: Annotated[str, Opt(help="Sensor model the calibration is for.")] = "",
    sensor_serial: Annotated[str, Opt(help="Sensor serial ('' = any unit).")] = "",
    station: Annotated[str, Opt(help="Reference station name/code.")] = "",
    report_dir: Annotated[Path | None, Opt(help="Also write the HTML report here.")] = None,
    aligned_out: Annotated[Path | None, Opt(help="Write the aligned data set (CSV).")] = None,
    show_candidates: Annotated[bool, Opt(help="With --train-days: also print every candidate's "
                                         "hold-out metrics (for transparency; the choice is "
                                         "made on the fitting period only).")] = False,
) -> None:
    """Align sensor and reference data, choose a model by forward-chaining validation, write it."""
    if quantity not in QUANTITIES:
        raise _fail(f"--quantity {quantity!r} unknown; allowed: {', '.join(sorted(QUANTITIES))}")
    for conv, opt in ((sensor_convention, "--sensor-convention"), (ref_convention, "--ref-convention")):
        if conv not in ("begin", "end"):
            raise _fail(f"{opt} {conv!r}: allowed values are 'begin' and 'end'")
    inputs = [("signal", signal, quantity), *(_parse_input(t) for t in input_ or [])]
    extras = [_parse_input(t) for t in extra or []]
    clash = {n for n, _, _ in extras} & {n for n, _, _ in inputs}
    if clash:
        raise _fail(f"--extra names {sorted(clash)} are already model inputs")
    na_values = ("", "NA", "NaN", "nan", "null", "-", *(na or []))
    s_spec = TableSpec(sensor, {n: c for n, c, _ in [*inputs, *extras]},
                       tuple(sensor_time.split(",")),
                       sensor_time_format, sensor_tz, sensor_convention,  # type: ignore[arg-type]
                       None, sensor_sep, sensor_decimal, na_values, sensor_flag_column,
                       tuple(sensor_flag_ok or ()))
    r_spec = TableSpec(reference, {"reference": ref_column}, tuple(ref_time.split(",")),
                       ref_time_format, ref_tz, ref_convention,  # type: ignore[arg-type]
                       None, ref_sep, ref_decimal, na_values, ref_flag_column,
                       tuple(ref_flag_ok or ()))
    try:
        data = align(s_spec, r_spec, period)
    except DataError as exc:
        raise _fail(str(exc)) from None
    for note in data.notes:
        typer.echo(note)
    if aligned_out:
        write_aligned(data, aligned_out)
    X = np.column_stack([data.values[n] for n, _, _ in inputs])
    y, t = data.values["reference"], data.start_s
    train = np.ones(t.size, dtype=bool)
    if train_days is not None:
        train = t < t[0] + train_days * 86400
        if train.all() or not train.any():
            raise _fail(f"--train-days {train_days} leaves no data to fit or to test")
    quantities = tuple(q for _, _, q in inputs)
    try:
        sel = select_model(Problem(X[train], y[train], t[train], quantities),
                           only=models.split(",") if models else None)
    except FitError as exc:
        raise _fail(str(exc)) from None
    ranges = [(float(X[train, j].min()), float(X[train, j].max())) for j in range(X.shape[1])]
    fit_metrics = metrics(y[train], predict(sel.spec, X[train]), quantity)
    fit_metrics["cv_rmse"] = sel.cv_rmse[sel.chosen]
    artefact = Artefact(
        id=cal_id or f"{quantity}-{sensor_model or 'sensor'}-{_fmt(t[0])[:10]}".replace(" ", "_"),
        version=version,
        quantity=quantity,
        sensor=SensorSpec(model=sensor_model, serial=sensor_serial),
        inputs=tuple(InputSpec(name=n, quantity=q, range=r) for (n, _, q), r in
                     zip(inputs, ranges, strict=True)),
        model=sel.spec,
        fit=FitInfo(
            period_start=_fmt(t[train][0]), period_end=_fmt(t[train][-1] + period),
            reference_station=station, n_samples=int(train.sum()), averaging_s=period,
            metrics={k: float(v) for k, v in fit_metrics.items()},
            validation={"scheme": "forward-chaining, 5 time blocks, 4 folds",
                        "chosen": sel.chosen, "cv_rmse": sel.cv_rmse, "skipped": sel.skipped},
        ),
        sha256=None,
    )
    saved = save_artefact(artefact, out)
    typer.echo(f"chosen model: {sel.chosen}; forward-chaining RMSE by candidate:")
    for name, score in sorted(sel.cv_rmse.items(), key=lambda kv: kv[1]):
        typer.echo(f"  {name:18s} {score:.4g}")
    typer.echo(f"wrote {out} (sha256 {saved.sha256})")
    if train_days is not None:
        test = ~train
        ev = evaluate(saved, t[test], {n: X[test, j] for j, (n, _, _) in enumerate(inputs)},
                      y[test], {n: (q, data.values[n][test]) for n, _, q in extras})
        _print_metrics("hold-out", ev.metrics_cal)
        typer.echo(f"  inputs outside fitted range: {100 * ev.out_of_range.mean():.1f} % of samples")
        if show_candidates:
            _print_candidates(Problem(X[train], y[train], t[train], quantities), X[test], y[test],
                              quantity, sel.chosen)
        if report_dir:
            typer.echo(f"report: {write_report(saved, ev, report_dir)}")
    elif report_dir:
        ev = evaluate(saved, t, {n: X[:, j] for j, (n, _, _) in enumerate(inputs)}, y,
                      {n: (q, data.values[n]) for n, _, q in extras})
        typer.echo(f"report (in-sample): {write_report(saved, ev, report_dir)}")


def _print_candidates(problem: Problem, X_test: np.ndarray, y_test: np.ndarray, quantity: str,
                      chosen: str) -> None:
    typer.echo("hold-out metrics of every candidate (not used for the choice):")
    typer.echo("  | model | R² | RMSE | MAE | mean bias | CRMSE | expanded uncertainty |")
    typer.echo("  |---|---|---|---|---|---|---|")
    for name, fitter in candidate_fitters(problem).items():
        try:
            m = metrics(y_test, predict(fitter(problem.X, problem.y), X_test), quantity)
        except FitError as exc:
            typer.echo(f"  | {name} | skipped: {exc} |")
            continue
        w = m.get("expanded_uncertainty")
        mark = " (chosen)" if name == chosen else ""
        typer.echo(f"  | {name}{mark} | {m['r2']:.3f} | {m['rmse']:.3g} | {m['mae']:.3g} | "
                   f"{m['bias']:+.3g} | {m['crmse']:.3g} | "
                   f"{'–' if w is None else f'{100 * w:.1f} %'} |")


def _print_metrics(label: str, m: dict[str, float]) -> None:
    w = m.get("expanded_uncertainty")
    typer.echo(
        f"{label}: n={int(m['n'])} R²={m['r2']:.3f} RMSE={m['rmse']:.4g} MAE={m['mae']:.4g} "
        f"bias={m['bias']:+.4g} CRMSE={m['crmse']:.4g}"
        + (f" expanded uncertainty={100 * w:.1f} % (DQO {100 * m['dqo']:.0f} %)" if w else "")
    )


def _load(artefact: Path) -> Artefact:
    try:
        return load_artefact(artefact)
    except ArtefactError as exc:
        raise _fail(str(exc)) from None


def _aligned_for(art: Artefact, data: Path) -> tuple[Aligned, dict[str, tuple[str, np.ndarray]]]:
    """The aligned data, plus T/RH columns named by their quantity code for the residual plots."""
    names = [i.name for i in art.inputs]
    try:
        header = data.read_text(encoding="utf-8").split("\n", 1)[0].strip().split(",")
        extra = [h for h in header if h in ("temperature", "humidity") and h not in names]
        aligned = read_aligned(data, [*names, "reference", *extra])
    except (DataError, OSError) as exc:
        raise _fail(str(exc)) from None
    return aligned, {h: (h, aligned.values[h]) for h in extra}


@app.command()
def report(
    artefact: Annotated[Path, typer.Argument(help="Artefact JSON.")],
    data: Annotated[Path, Opt(help="Aligned CSV (time_utc, reference, input columns), e.g. "
                                   "from `fit --aligned-out`.")],
    out_dir: Annotated[Path, Opt(help="Directory for index.html and PNG figures.")],
) -> None:
    """Write an HTML report with figures and metrics for an artefact on aligned data."""
    art = _load(artefact)
    aligned, extras = _aligned_for(art, data)
    ev = evaluate(art, aligned.start_s, aligned.values, aligned.values["reference"], extras)
    _print_metrics("calibrated", ev.metrics_cal)
    typer.echo(f"report: {write_report(art, ev, out_dir)}")


@app.command()
def check(
    artefact: Annotated[Path, typer.Argument(help="Deployed artefact JSON.")],
    data: Annotated[Path, Opt(help="Aligned CSV of the new co-location period.")],
    tolerance: Annotated[float, Opt(help="Allowed RMSE ratio vs the fit-time RMSE.")] = 1.5,
    as_json: Annotated[bool, Opt("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Detect drift of a deployed calibration; exit 0 keep, 1 adjust-offset or refit."""
    art = _load(artefact)
    aligned, _ = _aligned_for(art, data)
    ev = evaluate(art, aligned.start_s, aligned.values, aligned.values["reference"])
    result = drift_check(art, ev, tolerance)
    if as_json:
        typer.echo(json.dumps({"recommendation": result.recommendation, "reasons": result.reasons,
                               "metrics": result.metrics_new, "fitted_rmse": result.fitted_rmse}))
    else:
        _print_metrics("new period", ev.metrics_cal)
        typer.echo(f"recommendation: {result.recommendation.upper()}")
        for reason in result.reasons:
            typer.echo(f"  - {reason}")
    raise typer.Exit(0 if result.recommendation == "keep" else 1)


@app.command()
def preset(
    name: Annotated[str, typer.Argument(help="Preset name: us-epa-purpleair-2021.")],
    out: Annotated[Path, Opt(help="Artefact JSON to write.")],
    sensor_model: Annotated[str, Opt(help="Sensor model.")] = "PMS5003",
) -> None:
    """Write a named preset calibration (e.g. the US-EPA PurpleAir correction) as an artefact."""
    from calibration.artefact import PRESETS

    factory = PRESETS.get(name)
    if factory is None:
        raise _fail(f"unknown preset {name!r}; available: {', '.join(sorted(PRESETS))}")
    saved = save_artefact(factory(sensor_model), out)
    typer.echo(f"wrote {out} (sha256 {saved.sha256})")


@app.command("export-outbox")
def export_outbox_cmd(
    outbox: Annotated[Path, typer.Argument(help="The gateway's outbox.db (read-only).")],
    out: Annotated[Path, Opt(help="CSV to write (time_utc + one column per sensor/quantity).")],
) -> None:
    """Export the gateway's own buffer as sensor data for `fit` (raw, uncalibrated values)."""
    try:
        n = export_outbox(outbox, out)
    except DataError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"wrote {n} observations to {out}")
