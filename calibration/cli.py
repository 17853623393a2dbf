"""`duet-edge calibrate …`: fit, report and drift-check calibrations from co-location data.

Exit codes (every error is one line on stderr, never a traceback):

- 0: done (``check``: keep the deployed calibration);
- 1: ``check`` recommends adjust-offset or refit;
- 2: a usage or data problem (unknown option value, missing column, unreadable file, ...);
- 3: refused: the data would very probably give a wrong calibration (sensor and reference
  match better at a non-zero lag; missing-value markers such as −200 not declared with --na);
- 70: internal error (a bug: please report the message).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, ParamSpec, TypeVar

import numpy as np
import typer
from pydantic import ValidationError

from calibration.artefact import (
    ID_PATTERN,
    Artefact,
    ArtefactError,
    FitInfo,
    InputSpec,
    SensorSpec,
    load_artefact,
    migrate_v1,
    save_artefact,
)
from calibration.fit import (
    MODELS,
    FitError,
    Problem,
    Selection,
    candidates,
    per_sensor_fits,
    predict,
    select_model,
)
from calibration.io import (
    Aligned,
    DataError,
    RefusedError,
    TableSpec,
    align,
    export_outbox,
    read_aligned,
    write_aligned,
)
from calibration.metrics import metrics
from calibration.report import (
    Evaluation,
    describe_coefficients,
    drift_check,
    evaluate,
    write_report,
)
from edge.console import PlainTyper
from edge.quantities import QUANTITIES

app = PlainTyper(no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Fit, report and check calibrations.",
                  context_settings={"help_option_names": ["-h", "--help"]})

Opt = typer.Option
EXIT_CHECK, EXIT_USAGE, EXIT_REFUSED, EXIT_INTERNAL = 1, 2, 3, 70
P = ParamSpec("P")
R = TypeVar("R")


class UsageError(ValueError):
    """A bad option value, found before any data are read."""


def one_line_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Every failure becomes one line on stderr with its documented exit code."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except typer.Exit:
            raise
        except RefusedError as exc:
            _stderr(f"refused: {exc}")
            raise typer.Exit(EXIT_REFUSED) from None
        except (UsageError, DataError, FitError, ArtefactError, OSError) as exc:
            _stderr(f"error: {exc}")
            raise typer.Exit(EXIT_USAGE) from None
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                                 for e in exc.errors())
            _stderr(f"error: {problems}")
            raise typer.Exit(EXIT_USAGE) from None
        except Exception as exc:  # a bug: still one line, and an exit code that says so
            _stderr(f"internal error ({type(exc).__name__}): {exc}; please report this")
            raise typer.Exit(EXIT_INTERNAL) from None

    return run


def _stderr(msg: str) -> None:
    typer.echo(" ".join(msg.split("\n")), err=True)


def _parse_input(text: str) -> tuple[str, str, str]:
    """NAME=COLUMN[:QUANTITY]; the quantity defaults to NAME when NAME is a quantity code."""
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        raise UsageError(f"--input {text!r} must look like NAME=COLUMN[:QUANTITY], e.g. humidity=RH")
    column, _, qty = rest.rpartition(":") if ":" in rest else (rest, "", "")
    qty = qty or name
    if qty not in QUANTITIES:
        raise UsageError(f"--input {text!r}: quantity {qty!r} unknown; give NAME=COLUMN:QUANTITY "
                         f"with one of {', '.join(sorted(QUANTITIES))}")
    return name, column, qty


def _fmt(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


MODEL_HELP = "Restrict candidates, comma-separated. Models: " + "; ".join(
    f"{name} ({what})" for name, what in MODELS.items())

# ---------------------------------------------------------------- shared column-mapping options

SensorFiles = Annotated[list[str] | None, Opt(
    "--sensor", help="Sensor CSV; repeat for one file per sensor, optionally ID=PATH (default "
    "id: the file name). One file with several sensors: add --sensor-id-column.")]
ReferenceFile = Annotated[Path | None, Opt(help="Reference station CSV.")]
Signal = Annotated[str | None, Opt(help="Sensor column with the raw value to calibrate.")]
SignalQuantity = Annotated[str | None, Opt(
    help="Quantity of the raw signal if it differs from --quantity, e.g. pm2_5_cf1 (a PMS5003's "
    "CF=1 stream) calibrated into pm2_5.")]
RefColumn = Annotated[str | None, Opt(help="Reference column (the target).")]
Inputs = Annotated[list[str] | None, Opt("--input", help="Co-input NAME=COLUMN[:QUANTITY] from "
                                                         "the sensor file, e.g. humidity=RH.")]
Extras = Annotated[list[str] | None, Opt(help="Column carried along for the report only "
                                              "(not a model input), e.g. humidity=RH. Repeat.")]
SensorId = Annotated[str | None, Opt(help="Sensor-id column: one file, several co-located "
                                          "sensors; each sensor-interval is one sample.")]
SensorTime = Annotated[str, Opt(help="Sensor time column(s), comma-separated.")]
TimeFormat = Annotated[str | None, Opt(help="strptime format; default ISO 8601.")]
Zone = Annotated[str, Opt(help="IANA time zone of naive timestamps.")]
SensorConv = Annotated[str, Opt(help="Sensor labels: begin|end of the interval.")]
RefConv = Annotated[str, Opt(help="Reference labels: begin|end|auto (auto: end for hourly "
                                  "and shorter data, begin for daily means labelled by date).")]
Sep = Annotated[str | None, Opt(help="Separator (default: detect).")]
Decimal = Annotated[str | None, Opt(help="Decimal mark . or , (default: detect).")]
FlagCol = Annotated[str | None, Opt(help="Validity-flag column.")]
FlagOk = Annotated[list[str] | None, Opt(help="Flag values meaning valid. Repeat.")]
Na = Annotated[list[str] | None, Opt(help="Missing-value marker, e.g. -200. Repeat.")]
Period = Annotated[int | None, Opt(help="Averaging period, s (default: the longer of the two "
                                        "files' own intervals, detected from the data).")]
AllowLag = Annotated[bool, Opt(help="Fit even if sensor and reference match better at a "
                                    "non-zero lag (normally refused, exit 3).")]
KeepSentinels = Annotated[bool, Opt(help="Use values such as -200/-999 as data (normally "
                                         "refused, exit 3, until declared with --na).")]


@dataclass(frozen=True)
class Mapping:
    """The column mapping shared by ``fit`` and ``check``."""

    sensors: list[str]
    reference: Path
    signal: str
    ref_column: str
    inputs: list[tuple[str, str, str]]  # (name, column, quantity); input 0 is the signal
    extras: list[tuple[str, str, str]]
    sensor_id_column: str | None
    sensor_time: str = "time"
    sensor_time_format: str | None = None
    sensor_tz: str = "UTC"
    sensor_convention: str = "begin"
    sensor_sep: str | None = None
    sensor_decimal: str | None = None
    sensor_flag_column: str | None = None
    sensor_flag_ok: tuple[str, ...] = ()
    ref_time: str = "time"
    ref_time_format: str | None = None
    ref_tz: str = "UTC"
    ref_convention: str = "auto"
    ref_sep: str | None = None
    ref_decimal: str | None = None
    ref_flag_column: str | None = None
    ref_flag_ok: tuple[str, ...] = ()
    na: tuple[str, ...] = ()
    period: int | None = None
    allow_lag: bool = False
    keep_sentinels: bool = False

    def align(self) -> Aligned:
        na_values = ("", "NA", "NaN", "nan", "null", "-", *self.na)
        columns = {n: c for n, c, _ in [*self.inputs, *self.extras]}
        quantities = {n: q for n, _, q in [*self.inputs, *self.extras]}
        specs = []
        for item in self.sensors:
            name, path = _named_path(item)
            specs.append(TableSpec(
                path, columns, tuple(self.sensor_time.split(",")), self.sensor_time_format,
                self.sensor_tz, self.sensor_convention, None,  # type: ignore[arg-type]
                self.sensor_sep, self.sensor_decimal, na_values, self.sensor_flag_column,
                self.sensor_flag_ok, self.sensor_id_column, name, quantities))
        r_spec = TableSpec(self.reference, {"reference": self.ref_column},
                           tuple(self.ref_time.split(",")), self.ref_time_format, self.ref_tz,
                           self.ref_convention, None, self.ref_sep,  # type: ignore[arg-type]
                           self.ref_decimal, na_values, self.ref_flag_column, self.ref_flag_ok)
        return align(specs, r_spec, self.period, allow_lag=self.allow_lag,
                     keep_sentinels=self.keep_sentinels)


def _named_path(item: str) -> tuple[str, Path]:
    name, sep, path = item.partition("=")
    if sep and name and not Path(item).exists():
        return name, Path(path)
    return "", Path(item)


def _mapping(sensors: list[str] | None, reference: Path | None, signal: str | None,
             ref_column: str | None, quantity: str, input_: list[str] | None,
             extra: list[str] | None, **rest: object) -> Mapping:
    missing = [opt for opt, v in (("--sensor", sensors), ("--reference", reference),
                                  ("--signal", signal), ("--ref-column", ref_column)) if not v]
    if missing:
        raise UsageError(f"missing option(s) {', '.join(missing)} (see --help)")
    for opt in ("sensor_convention", "ref_convention"):
        allowed = ("begin", "end") if opt == "sensor_convention" else ("begin", "end", "auto")
        if rest[opt] not in allowed:
            raise UsageError(f"--{opt.replace('_', '-')} {rest[opt]!r}: allowed values are "
                             f"{', '.join(allowed)}")
    inputs = [("signal", signal or "", quantity), *(_parse_input(t) for t in input_ or [])]
    extras = [_parse_input(t) for t in extra or []]
    clash = {n for n, _, _ in extras} & {n for n, _, _ in inputs}
    if clash:
        raise UsageError(f"--extra names {sorted(clash)} are already model inputs")
    for key in ("sensor_flag_ok", "ref_flag_ok", "na"):
        rest[key] = tuple(rest[key] or ())  # type: ignore[arg-type]
    return Mapping(list(sensors or []), reference or Path(), signal or "", ref_column or "",
                   inputs, extras, **rest)  # type: ignore[arg-type]


MAPPING_OPTIONS = (
    "sensor_id_column", "sensor_time", "sensor_time_format", "sensor_tz", "sensor_convention",
    "sensor_sep", "sensor_decimal", "sensor_flag_column", "sensor_flag_ok", "ref_time",
    "ref_time_format", "ref_tz", "ref_convention", "ref_sep", "ref_decimal", "ref_flag_column",
    "ref_flag_ok", "na", "period", "allow_lag", "keep_sentinels",
)


def _mapping_from(params: dict[str, object], signal_quantity: str) -> Mapping:
    """The column mapping from a command's parameters (``fit`` and ``check`` share them)."""
    return _mapping(
        params["sensor"], params["reference"], params["signal"],  # type: ignore[arg-type]
        params["ref_column"], signal_quantity, params["input_"],  # type: ignore[arg-type]
        params.get("extra"), **{k: params[k] for k in MAPPING_OPTIONS},  # type: ignore[arg-type]
    )


def _check_quantity(opt: str, code: str) -> None:
    if code not in QUANTITIES:
        raise UsageError(f"{opt} {code!r} unknown; allowed: {', '.join(sorted(QUANTITIES))}")


def _artefact_id(cal_id: str, quantity: str, sensor_model: str, start: float) -> str:
    if cal_id:
        if not re.match(ID_PATTERN, cal_id):
            raise UsageError(f"--id {cal_id!r}: use letters, digits and . _ : + - only")
        return cal_id
    # a derived id must be valid whatever the model name holds ('PA-II/PMS5003' → 'PA-II-PMS5003')
    model = re.sub(r"[^A-Za-z0-9._:+-]+", "-", sensor_model).strip("-") or "sensor"
    return f"{quantity}-{model}-{_fmt(start)[:10]}"


def _print_notes(data: Aligned, quiet: bool) -> None:
    for note in data.notes:
        if not quiet:
            typer.echo(note)
    for warning in data.warnings:
        _stderr(f"WARNING: {warning}")


# ---------------------------------------------------------------- fit


@app.command()
@one_line_errors
def fit(
    ctx: typer.Context,
    quantity: Annotated[str, Opt(help="Quantity the calibration produces, e.g. pm2_5, no2, co.")],
    out: Annotated[Path, Opt(help="Artefact JSON to write.")],
    sensor: SensorFiles = None,
    reference: ReferenceFile = None,
    signal: Signal = None,
    signal_quantity: SignalQuantity = None,
    ref_column: RefColumn = None,
    input_: Inputs = None,
    extra: Extras = None,
    sensor_id_column: SensorId = None,
    sensor_time: SensorTime = "time",
    sensor_time_format: TimeFormat = None,
    sensor_tz: Zone = "UTC",
    sensor_convention: SensorConv = "begin",
    sensor_sep: Sep = None,
    sensor_decimal: Decimal = None,
    sensor_flag_column: FlagCol = None,
    sensor_flag_ok: FlagOk = None,
    ref_time: SensorTime = "time",
    ref_time_format: TimeFormat = None,
    ref_tz: Zone = "UTC",
    ref_convention: RefConv = "auto",
    ref_sep: Sep = None,
    ref_decimal: Decimal = None,
    ref_flag_column: FlagCol = None,
    ref_flag_ok: FlagOk = None,
    na: Na = None,
    period: Period = None,
    allow_lag: AllowLag = False,
    keep_sentinels: KeepSentinels = False,
    train_days: Annotated[float | None, Opt(help="Fit on the first N days only; score the rest "
                                            "(time-ordered hold-out).")] = None,
    models: Annotated[str | None, Opt(help=MODEL_HELP)] = None,
    cal_id: Annotated[str, Opt("--id", help="Artefact id (letters, digits, . _ : + -).")] = "",
    version: Annotated[str, Opt(help="Artefact version.")] = "1",
    sensor_model: Annotated[str, Opt(help="Sensor model the calibration is for.")] = "",
    sensor_serial: Annotated[str, Opt(help="Sensor serial ('' = any unit).")] = "",
    station: Annotated[str, Opt(help="Reference station name/code.")] = "",
    report_dir: Annotated[Path | None, Opt(help="Also write the HTML report here.")] = None,
    aligned_out: Annotated[Path | None, Opt(help="Write the aligned data set (CSV).")] = None,
    show_candidates: Annotated[bool, Opt(help="With --train-days: also print every candidate's "
                                         "hold-out metrics (the choice is made on the fitting "
                                         "period only).")] = False,
    per_sensor_dir: Annotated[Path | None, Opt(help="Also fit the chosen model on each sensor "
                                               "alone and write one artefact per sensor here.")] = None,
    as_json: Annotated[bool, Opt("--json", help="Print a JSON summary instead of text.")] = False,
) -> None:
    """Align sensor(s) and reference, choose a model by forward-chaining validation, write it."""
    _check_quantity("--quantity", quantity)
    in_quantity = signal_quantity or quantity
    _check_quantity("--signal-quantity", in_quantity)
    if models:
        unknown = sorted(set(models.split(",")) - set(MODELS))
        if unknown:
            raise UsageError(f"--models: unknown {unknown}; models: {', '.join(MODELS)}")
    if cal_id:
        _artefact_id(cal_id, quantity, sensor_model, 0.0)
    mapping = _mapping_from(ctx.params, in_quantity)
    data = mapping.align()
    _print_notes(data, as_json)
    out.parent.mkdir(parents=True, exist_ok=True)
    if aligned_out:
        write_aligned(data, aligned_out)
    inputs = mapping.inputs
    X = np.column_stack([data.values[n] for n, _, _ in inputs])
    y, t, groups = data.values["reference"], data.start_s, data.groups
    train = np.ones(t.size, dtype=bool)
    if train_days is not None:
        train = t < t.min() + train_days * 86400
        if train.all() or not train.any():
            raise UsageError(f"--train-days {train_days} leaves no data to fit or to test")
    quantities = tuple(q for _, _, q in inputs)
    problem = Problem(X[train], y[train], t[train], quantities,
                      groups=groups[train] if groups is not None else None)
    sel = select_model(problem, only=models.split(",") if models else None)
    saved = save_artefact(_build_artefact(
        sel, inputs, X[train], t[train], y[train], quantity, data.period_s,
        _artefact_id(cal_id, quantity, sensor_model, float(t.min())), version, sensor_model,
        sensor_serial, station, data.sensors), out)
    summary = _fit_summary(saved, sel, out)
    test_ev = None
    if train_days is not None:
        test = ~train
        test_ev = evaluate(saved, t[test], {n: X[test, j] for j, (n, _, _) in enumerate(inputs)},
                           y[test], {n: (q, data.values[n][test]) for n, _, q in mapping.extras},
                           groups[test] if groups is not None else None)
        summary["hold_out"] = _ev_summary(test_ev)
    if groups is not None and sel.fitter is not None:
        summary["per_sensor_fits"] = _per_sensor(saved, sel, X, y, groups, train, per_sensor_dir)
    if as_json:
        typer.echo(json.dumps(summary, ensure_ascii=False))
    else:
        _print_fit(saved, sel, summary, test_ev, quantity)
        if show_candidates and test_ev is not None:
            _print_candidates(problem, X[~train], y[~train], quantity, sel.chosen)
    if report_dir:
        ev = test_ev or evaluate(saved, t, {n: X[:, j] for j, (n, _, _) in enumerate(inputs)}, y,
                                 {n: (q, data.values[n]) for n, _, q in mapping.extras}, groups)
        path = write_report(saved, ev, report_dir)
        if not as_json:
            typer.echo(f"report{'' if test_ev else ' (in-sample)'}: {path}")


def _build_artefact(sel: Selection, inputs: list[tuple[str, str, str]], X: np.ndarray,
                    t: np.ndarray, y: np.ndarray, quantity: str, period: int, art_id: str,
                    version: str, sensor_model: str, sensor_serial: str, station: str,
                    sensors: list[str]) -> Artefact:
    ranges = [(float(X[:, j].min()), float(X[:, j].max())) for j in range(X.shape[1])]
    fit_metrics = metrics(y, predict(sel.spec, X), quantity)
    fit_metrics["cv_rmse"] = sel.cv_rmse[sel.chosen]
    return Artefact(
        id=art_id, version=version, quantity=quantity,
        sensor=SensorSpec(model=sensor_model, serial=sensor_serial),
        inputs=tuple(InputSpec(name=n, quantity=q, range=r) for (n, _, q), r in
                     zip(inputs, ranges, strict=True)),
        model=sel.spec,
        fit=FitInfo(
            period_start=_fmt(float(t.min())), period_end=_fmt(float(t.max()) + period),
            reference_station=station, n_samples=int(y.size), averaging_s=period,
            metrics={k: float(v) for k, v in fit_metrics.items()},
            validation={
                "scheme": f"forward-chaining, 5 time blocks, {len(sel.folds)} folds, scored on "
                          f"sensor-intervals",
                "chosen": sel.chosen, "cv_rmse": sel.cv_rmse, "skipped": sel.skipped,
                "sensors": sensors, "leave_one_sensor_out_rmse": sel.loso_rmse,
            },
        ),
        sha256=None,
    )


def _per_sensor(saved: Artefact, sel: Selection, X: np.ndarray, y: np.ndarray,
                groups: np.ndarray, train: np.ndarray,
                out_dir: Path | None) -> dict[str, dict[str, float]]:
    """Pooled model vs the same family fitted on each sensor alone, scored on that sensor's
    hold-out intervals (its fitting intervals without --train-days)."""
    assert sel.fitter is not None
    own = per_sensor_fits(Problem(X[train], y[train], np.zeros(int(train.sum())),
                                  tuple(i.quantity for i in saved.inputs),
                                  groups=groups[train]), sel.fitter)
    scored = ~train if (~train).any() else train
    result: dict[str, dict[str, float]] = {}
    for name, spec in own.items():
        rows = scored & (groups == name)
        if not rows.any():
            continue
        result[name] = {
            "pooled_rmse": float(np.sqrt(np.mean((predict(saved.model, X[rows]) - y[rows]) ** 2))),
            "own_fit_rmse": float(np.sqrt(np.mean((predict(spec, X[rows]) - y[rows]) ** 2))),
        }
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            validation = dict(saved.fit.validation) | {"fitted_on_sensor": name}
            art = saved.model_copy(update={
                "id": f"{saved.id}.{re.sub(r'[^A-Za-z0-9._:+-]+', '-', name)}", "model": spec,
                "fit": saved.fit.model_copy(update={"validation": validation}), "sha256": None})
            save_artefact(Artefact.model_validate(art.model_dump(by_alias=True)),
                          out_dir / f"{art.id}.json")
    return result


def _ev_summary(ev: Evaluation) -> dict[str, object]:
    return {"metrics": ev.metrics_cal, "per_sensor": ev.per_sensor or {},
            "out_of_range_fraction": float(ev.out_of_range.mean()),
            "coverage": None if ev.coverage is None else {
                "threshold": ev.coverage.threshold, "n_above": ev.coverage.n_above,
                "n": ev.coverage.n, "thin": ev.coverage.thin}}


def _fit_summary(saved: Artefact, sel: Selection, out: Path) -> dict[str, object]:
    return {"artefact": str(out), "sha256": saved.sha256, "id": saved.id,
            "maps": [saved.inputs[0].quantity, saved.quantity], "chosen": sel.chosen,
            "coefficients": describe_coefficients(saved), "cv_rmse": sel.cv_rmse,
            "skipped": sel.skipped, "leave_one_sensor_out_rmse": sel.loso_rmse,
            "fit_metrics": saved.fit.metrics}


def _print_fit(saved: Artefact, sel: Selection, summary: dict[str, object],
               test_ev: Evaluation | None, quantity: str) -> None:
    typer.echo(f"chosen model: {sel.chosen}; maps {saved.inputs[0].quantity} → {saved.quantity}")
    for line in describe_coefficients(saved):
        typer.echo(f"  {line}")
    typer.echo("forward-chaining RMSE by candidate (on sensor-intervals):")
    for name, score in sorted(sel.cv_rmse.items(), key=lambda kv: kv[1]):
        typer.echo(f"  {name:18s} {score:.4g}")
    for name, why in sel.skipped.items():
        typer.echo(f"  {name:18s} not used: {why}")
    if sel.loso_rmse:
        typer.echo("leave-one-sensor-out RMSE (fitted on the other sensors): " + ", ".join(
            f"{k} {v:.3g}" for k, v in sel.loso_rmse.items()))
    typer.echo(f"wrote {summary['artefact']} (sha256 {saved.sha256})")
    per_sensor = summary.get("per_sensor_fits")
    if isinstance(per_sensor, dict) and per_sensor:
        where = "hold-out" if test_ev is not None else "fitting data"
        typer.echo(f"per-sensor fits ({where} RMSE, pooled model vs the same model fitted on "
                   f"that sensor alone):")
        for name, r in per_sensor.items():
            typer.echo(f"  {name:10s} pooled {r['pooled_rmse']:.4g}  own {r['own_fit_rmse']:.4g}")
    if test_ev is None:
        return
    _print_metrics("hold-out", test_ev.metrics_cal)
    typer.echo(f"  inputs outside fitted range: {100 * test_ev.out_of_range.mean():.1f} % of "
               f"samples")
    for name, m in (test_ev.per_sensor or {}).items():
        _print_metrics(f"  sensor {name}", m)
    if test_ev.coverage is not None and test_ev.coverage.thin:
        _stderr("WARNING: " + test_ev.coverage.warning(QUANTITIES[quantity].unit_symbol))


def _print_candidates(problem: Problem, X_test: np.ndarray, y_test: np.ndarray, quantity: str,
                      chosen: str) -> None:
    typer.echo("hold-out metrics of every candidate (not used for the choice):")
    typer.echo("  | model | R² | RMSE | MAE | mean bias | CRMSE | expanded uncertainty |")
    typer.echo("  |---|---|---|---|---|---|---|")
    found = candidates(problem)
    for name, fitter in found.fitters.items():
        try:
            m = metrics(y_test, predict(fitter(problem.X, problem.y), X_test), quantity)
        except FitError as exc:
            typer.echo(f"  | {name} | not used: {exc} |")
            continue
        w = m.get("expanded_uncertainty")
        mark = " (chosen)" if name == chosen else ""
        typer.echo(f"  | {name}{mark} | {m['r2']:.3f} | {m['rmse']:.3g} | {m['mae']:.3g} | "
                   f"{m['bias']:+.3g} | {m['crmse']:.3g} | "
                   f"{'–' if w is None else f'{100 * w:.1f} %'} |")
    for name, why in found.unavailable.items():
        typer.echo(f"  | {name} | not used: {why} |")


def _print_metrics(label: str, m: dict[str, float]) -> None:
    w = m.get("expanded_uncertainty")
    typer.echo(
        f"{label}: n={int(m['n'])} R²={m['r2']:.3f} RMSE={m['rmse']:.4g} MAE={m['mae']:.4g} "
        f"bias={m['bias']:+.4g} CRMSE={m['crmse']:.4g}"
        + (f" expanded uncertainty={100 * w:.1f} % (DQO {100 * m['dqo']:.0f} %)" if w else "")
    )


def _load(artefact: Path) -> Artefact:
    return load_artefact(artefact)


def _aligned_for(art: Artefact, data: Path) -> tuple[Aligned, dict[str, tuple[str, np.ndarray]]]:
    """The aligned data, plus T/RH columns named by their quantity code for the residual plots."""
    names = [i.name for i in art.inputs]
    header = data.read_text(encoding="utf-8").split("\n", 1)[0].strip().split(",")
    extra = [h for h in header if h in ("temperature", "humidity") and h not in names]
    aligned = read_aligned(data, [*names, "reference", *extra])
    return aligned, {h: (h, aligned.values[h]) for h in extra}


@app.command()
@one_line_errors
def report(
    artefact: Annotated[Path, typer.Argument(help="Artefact JSON.")],
    data: Annotated[Path, Opt(help="Aligned CSV (time_utc, [sensor], reference, input columns), "
                                   "e.g. from `fit --aligned-out`.")],
    out_dir: Annotated[Path, Opt(help="Directory for index.html and PNG figures.")],
) -> None:
    """Write an HTML report with figures and metrics for an artefact on aligned data."""
    art = _load(artefact)
    aligned, extras = _aligned_for(art, data)
    ev = evaluate(art, aligned.start_s, aligned.values, aligned.values["reference"], extras,
                  aligned.groups)
    _print_metrics("calibrated", ev.metrics_cal)
    typer.echo(f"report: {write_report(art, ev, out_dir)}")


@app.command()
@one_line_errors
def check(
    ctx: typer.Context,
    artefact: Annotated[Path, typer.Argument(help="Deployed artefact JSON.")],
    data: Annotated[Path | None, Opt(help="Aligned CSV of the new co-location period (from "
                                          "`fit --aligned-out`); or give the raw files with the "
                                          "same mapping options as fit.")] = None,
    sensor: SensorFiles = None,
    reference: ReferenceFile = None,
    signal: Signal = None,
    ref_column: RefColumn = None,
    input_: Inputs = None,
    sensor_id_column: SensorId = None,
    sensor_time: SensorTime = "time",
    sensor_time_format: TimeFormat = None,
    sensor_tz: Zone = "UTC",
    sensor_convention: SensorConv = "begin",
    sensor_sep: Sep = None,
    sensor_decimal: Decimal = None,
    sensor_flag_column: FlagCol = None,
    sensor_flag_ok: FlagOk = None,
    ref_time: SensorTime = "time",
    ref_time_format: TimeFormat = None,
    ref_tz: Zone = "UTC",
    ref_convention: RefConv = "auto",
    ref_sep: Sep = None,
    ref_decimal: Decimal = None,
    ref_flag_column: FlagCol = None,
    ref_flag_ok: FlagOk = None,
    na: Na = None,
    period: Period = None,
    allow_lag: AllowLag = False,
    keep_sentinels: KeepSentinels = False,
    tolerance: Annotated[float, Opt(help="Allowed RMSE ratio vs the fit-time RMSE.")] = 1.5,
    as_json: Annotated[bool, Opt("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Detect drift of a deployed calibration; exit 0 keep, 1 adjust-offset or refit."""
    art = _load(artefact)
    if data is not None:
        aligned, _ = _aligned_for(art, data)
    else:
        given = {n for n, _, _ in (_parse_input(i) for i in input_ or [])}
        missing = [i.name for i in art.inputs[1:] if i.name not in given]
        if missing:
            raise UsageError(f"the artefact needs co-input(s) {missing}: add --input "
                             f"NAME=COLUMN for each (as at fit time)")
        mapping = _mapping_from(ctx.params, art.inputs[0].quantity)
        aligned = mapping.align()
        _print_notes(aligned, as_json)
    ev = evaluate(art, aligned.start_s, aligned.values, aligned.values["reference"],
                  groups=aligned.groups)
    result = drift_check(art, ev, tolerance)
    if as_json:
        typer.echo(json.dumps({"recommendation": result.recommendation, "reasons": result.reasons,
                               "metrics": result.metrics_new, "fitted_rmse": result.fitted_rmse,
                               "per_sensor": ev.per_sensor or {}}))
    else:
        _print_metrics("new period", ev.metrics_cal)
        for name, m in (ev.per_sensor or {}).items():
            _print_metrics(f"  sensor {name}", m)
        typer.echo(f"recommendation: {result.recommendation.upper()}")
        for reason in result.reasons:
            typer.echo(f"  - {reason}")
    raise typer.Exit(0 if result.recommendation == "keep" else EXIT_CHECK)


@app.command()
@one_line_errors
def preset(
    name: Annotated[str, typer.Argument(help="Preset name: us-epa-purpleair-2021.")],
    out: Annotated[Path, Opt(help="Artefact JSON to write.")],
    sensor_model: Annotated[str, Opt(help="Sensor model.")] = "PMS5003",
) -> None:
    """Write a named preset calibration (e.g. the US-EPA PurpleAir correction) as an artefact."""
    from calibration.artefact import PRESETS

    factory = PRESETS.get(name)
    if factory is None:
        raise UsageError(f"unknown preset {name!r}; available: {', '.join(sorted(PRESETS))}")
    saved = save_artefact(factory(sensor_model), out)
    typer.echo(f"wrote {out} (sha256 {saved.sha256})")


@app.command()
@one_line_errors
def migrate(
    artefact: Annotated[Path, typer.Argument(help="Artefact JSON of an older schema.")],
    out: Annotated[Path, Opt(help="Where to write the migrated artefact.")],
) -> None:
    """Rewrite a schema-1 artefact in the current schema (κ/1.65, identical corrected values)."""
    art = migrate_v1(load_artefact(artefact))
    saved = save_artefact(art, out)
    origin = art.fit.validation.get("migrated_from")
    typer.echo(f"wrote {out} (sha256 {saved.sha256})"
               + (f", migrated from {origin['schema']}" if isinstance(origin, dict) else
                  ", already current"))


@app.command("export-outbox")
@one_line_errors
def export_outbox_cmd(
    outbox: Annotated[Path, typer.Argument(help="The gateway's outbox.db (read-only).")],
    out: Annotated[Path, Opt(help="CSV to write (time_utc + one column per sensor/quantity).")],
) -> None:
    """Export the gateway's own buffer as sensor data for `fit` (raw, uncalibrated values)."""
    n = export_outbox(outbox, out)
    typer.echo(f"wrote {n} observations to {out}")


@app.command("demo-campaign")
@one_line_errors
def demo_campaign(
    out_dir: Annotated[Path, Opt(help="Directory for sensors.csv and reference.csv.")],
    days: Annotated[int, Opt(min=30, max=730, help="Campaign length in days.")] = 120,
) -> None:
    """Write a synthetic six-sensor PM co-location campaign to practise on (not real data)."""
    from calibration.demo import write_campaign

    sensors, reference = write_campaign(out_dir, days)
    typer.echo(f"wrote {sensors} and {reference} (synthetic, six units, {days} days)")


@app.command()
@one_line_errors
def replay(
    config: Annotated[Path, typer.Argument(help="The gateway TOML with its [calibration] section.")],
    data: Annotated[Path, Opt(help="Sensor CSV: a time column, a sensor-id column and one column "
                                   "per quantity code (e.g. pm2_5_cf1, temperature, humidity).")],
    sensor_id_column: Annotated[str, Opt(help="Column naming the sensor (its source name).")] =
    "sensor",
    time_column: Annotated[str, Opt(help="ISO 8601 time column (UTC if naive).")] = "time",
    sensor_model: Annotated[str, Opt(help="Provenance sensor model of the replayed sensors.")] =
    "",
    na: Na = None,
) -> None:
    """Replay raw sensor data through the gateway's own CalibrationStage, built from the gateway
    TOML exactly as `duet-edge run` builds it; print what it calibrated, per sensor."""
    from calibration.replay import replay_csv
    from calibration.settings import CalibrationSettings
    from edge.config import ConfigError, load_config

    try:
        gateway = load_config(config)
    except ConfigError as exc:
        raise UsageError(f"{exc.source}: " + "; ".join(str(p) for p in exc.problems)) from None
    settings = gateway.settings(CalibrationSettings)
    if settings is None:
        raise UsageError(f"{config}: no [calibration] section")
    result = replay_csv(gateway.gateway.id, settings, data, sensor_id_column,
                        time_column, sensor_model, tuple(na or ()))
    for line in result:
        typer.echo(line)
