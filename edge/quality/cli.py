"""``duet-edge quality …``: score series, evaluate the quality stage, train anomaly models.

Exit codes: 0 done; 2 the input or an option is unusable (one line on stderr, ``error: …``,
naming the problem and the fix).
"""

from __future__ import annotations

import json
import sys
import time
import tomllib
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from pydantic import ValidationError

from edge.console import PlainTyper
from edge.model import QC_SUSPECT
from edge.quality import nab
from edge.quality.faults import FAULT_TYPES
from edge.quality.settings import MlSettings, QualitySettings

app = PlainTyper(no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Score, train and evaluate quality control.",
                  context_settings={"help_option_names": ["-h", "--help"]})

DataOpt = Annotated[
    Path | None,
    typer.Option("--data", help="UCI Air Quality CSV; the twin receiver's store (.db, with "
                 "--sensor); or a CSV with timestamp + quantity columns (default: the UCI copy "
                 "in the repository)."),
]
SensorOpt = Annotated[
    str | None, typer.Option(help="With a twin store (.db) as --data: the sensor to use.")
]
ConfigOpt = Annotated[
    Path | None, typer.Option(help="TOML file whose [quality] section sets the stage up.")
]


def _fail(msg: str) -> typer.Exit:
    typer.echo(f"error: {msg}", err=True)
    return typer.Exit(2)


def _settings_from(config: Path | None) -> QualitySettings:
    if config is None:
        return QualitySettings.model_validate({})
    try:
        data = tomllib.loads(config.read_text())
        return QualitySettings.model_validate(data.get("quality", {}))
    except OSError as exc:
        raise _fail(f"cannot read --config {config}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise _fail(f"--config {config} is not valid TOML: {exc}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise _fail(f"--config {config}: [quality] {where}: {first['msg']}") from None


def _series(data: Path | None, sensor: str | None):  # type: ignore[no-untyped-def]
    from edge.quality.train import load_series

    if data is not None and not data.is_file():
        raise _fail(f"--data {data}: no such file")
    try:
        return load_series(data, sensor)
    except (ValueError, KeyError, OSError) as exc:
        raise _fail(f"--data {data or 'UCI'}: {exc}") from None


# ---------------------------------------------------------------------- score
@app.command()
def score(
    input_csv: Annotated[Path, typer.Argument(
        metavar="INPUT.csv", help="CSV with a 'timestamp' column and one or more value columns.")],
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Output file (one value column; default: stdout) or folder (one "
        "<column>.csv per value column).")] = None,
    quantity: Annotated[str, typer.Option(
        help="Quantity code for value columns whose name is not one (its rules apply).")
    ] = "value",
    flags: Annotated[bool, typer.Option(
        "--flags", help="Also write the aggregate QARTOD flag and the tests that flagged the value.")
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """Stream a CSV through the gateway's quality stage: timestamp,value,anomaly_score[,flags]."""
    from edge.quality.score import InputError, score_rows, write_rows

    settings = _settings_from(config)
    try:
        with input_csv.open(newline="", encoding="utf-8") as fh:
            columns, rows = score_rows(fh, settings, quantity)
    except OSError as exc:
        raise _fail(f"cannot read {input_csv}: {exc.strerror}") from None
    except (InputError, UnicodeDecodeError) as exc:
        raise _fail(f"{input_csv}: {exc}") from None
    if len(columns) == 1 and (out is None or not out.is_dir()):
        if out is None:
            write_rows(rows[columns[0]], sys.stdout, flags)
            return
        with _open_out(out) as fh:
            write_rows(rows[columns[0]], fh, flags)
        return
    if out is None:
        raise _fail(f"{input_csv} has {len(columns)} value columns ({', '.join(columns)}): "
                    "give a folder with --out, one <column>.csv is written per column")
    out.mkdir(parents=True, exist_ok=True)
    for column in columns:
        with _open_out(out / f"{column}.csv") as fh:
            write_rows(rows[column], fh, flags)
    typer.echo(f"wrote {len(columns)} files to {out}", err=True)


def _open_out(path: Path):  # type: ignore[no-untyped-def]
    try:
        return path.open("w", newline="", encoding="utf-8")
    except OSError as exc:
        raise _fail(f"cannot write {path}: {exc.strerror}") from None


# ---------------------------------------------------------------------- train
@app.command()
def train(
    data: DataOpt = None,
    out: Annotated[Path, typer.Option(help="Artefact folder to write.")] = Path(
        "models/co-autoencoder"
    ),
    quantity: Annotated[str, typer.Option(help="Quantity code (column) to model.")] = "co",
    co_features: Annotated[str, typer.Option(help="Comma-separated co-measured columns.")] = (
        "temperature,humidity"
    ),
    window: Annotated[int, typer.Option(min=2, max=256)] = 12,
    epochs: Annotated[int, typer.Option(min=1)] = 60,
    seed: Annotated[int, typer.Option()] = 7,
    train_fraction: Annotated[float, typer.Option(min=0.05, max=0.9)] = 0.25,
    val_fraction: Annotated[float, typer.Option(min=0.02, max=0.5)] = 0.10,
    name: Annotated[str | None, typer.Option(help="Artefact name.")] = None,
    sensor: SensorOpt = None,
) -> None:
    """Train the window autoencoder on clean data and write model.tflite + model.json."""
    from edge.quality.ml import save_artefact
    from edge.quality.train import TrainConfig, TrainingDataError
    from edge.quality.train import train as fit

    cfg = TrainConfig(
        quantity=quantity,
        co_features=tuple(c for c in co_features.split(",") if c),
        window=window,
        epochs=epochs,
        seed=seed,
        train_fraction=train_fraction,
        val_fraction=val_fraction,
    )
    started = time.perf_counter()
    series = _series(data, sensor)
    missing = [c for c in (quantity, *cfg.co_features) if c not in series.values]
    if missing:
        raise _fail(f"columns {', '.join(missing)} not in the data; "
                    f"have: {', '.join(sorted(series.values))}")
    try:
        artefact = fit(series, cfg, name=name)
    except TrainingDataError as exc:
        raise _fail(str(exc)) from None
    save_artefact(artefact, out)
    t = artefact.meta["training"]
    typer.echo(
        f"wrote {out} ({artefact.name}@{artefact.version}): {len(artefact.tflite)} B tflite, "
        f"layers {artefact.layers}, threshold {artefact.threshold:.4g}, "
        f"train rows {t['train_rows']}, val rows {t['val_rows']}, "
        f"{time.perf_counter() - started:.1f} s"
    )


# ---------------------------------------------------------------------- evaluate
@app.command()
def evaluate(
    data: DataOpt = None,
    sensor: SensorOpt = None,
    quantity: Annotated[str | None, typer.Option(
        help="Quantity (column) to inject faults into (default co); with --nab-labels: the "
        "quantity code the series are checked as (default: generic thresholds).")] = None,
    events: Annotated[int, typer.Option(min=1, help="Events per fault type.")] = 20,
    seed: Annotated[int, typer.Option()] = 1,
    twin_noise: Annotated[
        float, typer.Option(help="Noise of the simulated co-located twin (0: no twin).")
    ] = 0.03,
    faults: Annotated[str, typer.Option(help="Comma-separated fault types.")] = ",".join(
        FAULT_TYPES
    ),
    model_dir: Annotated[Path | None, typer.Option(help="Anomaly model folder.")] = None,
    config: ConfigOpt = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write JSON here.")] = None,
    nab_labels: Annotated[Path | None, typer.Option(
        help="NAB-style labels JSON: score the labelled series in it instead.")] = None,
    nab_data: Annotated[Path | None, typer.Option(
        help="Folder the label keys are relative to (default: the labels file's folder).")
    ] = None,
    results: Annotated[Path | None, typer.Option(
        help="Results folder: one CSV per series with anomaly_score and label columns "
        "(NAB's results layout, or `quality score` output with a label column); sweeps "
        "the threshold.")] = None,
) -> None:
    """Fault injection (default); NAB scoring of labelled series; or a results folder."""
    settings = _settings_from(config)
    if results is not None:
        _evaluate_results(results, json_out)
        return
    if nab_labels is not None:
        _evaluate_nab(nab_labels, nab_data or nab_labels.parent, quantity or "value", settings,
                      json_out)
        return
    from edge.quality.evaluate import evaluate as run
    from edge.quality.evaluate import format_report

    kinds = tuple(k for k in faults.split(",") if k)
    bad = [k for k in kinds if k not in FAULT_TYPES]
    if bad:
        raise _fail(f"unknown fault types {', '.join(bad)}; known: {', '.join(FAULT_TYPES)}")
    series = _series(data, sensor)
    code = quantity or "co"
    if code not in series.values:
        raise _fail(f"--quantity {code}: no such column; have: {', '.join(sorted(series.values))}")
    try:
        report = run(series, quantity=code, n_events=events, seed=seed, twin_noise=twin_noise,
                     model_dir=model_dir, kinds=kinds, settings=settings)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    typer.echo(format_report(report))
    if json_out is not None:
        json_out.write_text(json.dumps(report.as_dict(), indent=2) + "\n")


def _sweep_table(items: list[nab.LabelledScores]) -> dict[str, dict[str, float]]:
    out = {}
    for profile in nab.PROFILES:
        best = nab.sweep(items, profile)
        out[profile] = {"score": round(best.score, 2), "threshold": round(best.threshold, 3)}
    return out


def _echo_sweep(table: dict[str, dict[str, float]], title: str) -> None:
    typer.echo(f"| profile | NAB score ({title}) | best threshold |\n|---|---|---|")
    for profile, row in table.items():
        typer.echo(f"| {profile} | {row['score']:.2f} | {row['threshold']:.3f} |")


def _evaluate_results(folder: Path, json_out: Path | None) -> None:
    from edge.quality.score import InputError, read_results

    if not folder.is_dir():
        raise _fail(f"--results {folder}: no such folder")
    try:
        items = list(read_results(folder))
    except (InputError, OSError, UnicodeDecodeError) as exc:
        raise _fail(str(exc)) from None
    table = _sweep_table(items)
    _echo_sweep(table, f"{len(items)} series, threshold swept")
    if json_out is not None:
        json_out.write_text(json.dumps({"sweep": table, "files": [i.name for i in items]},
                                       indent=2) + "\n")


def _evaluate_nab(labels_path: Path, root: Path, quantity: str, settings: QualitySettings,
                  json_out: Path | None) -> None:
    from edge.quality.evaluate import run_stage

    run_settings = settings.model_copy(update={"ml": MlSettings.model_validate({"enabled": False})})
    try:
        labels = nab.load_labels(labels_path)
    except (OSError, ValueError) as exc:
        raise _fail(f"--nab-labels {labels_path}: {exc}") from None
    swept: list[nab.LabelledScores] = []
    per_profile: dict[str, list[nab.FileScore]] = {p: [] for p in nab.PROFILES}
    rows = []
    for name, windows in sorted(labels.items()):
        try:
            times, values = nab.read_series(root / name)
        except (OSError, KeyError, ValueError) as exc:
            raise _fail(f"series {root / name}: {exc}") from None
        key = ("nab", quantity)
        run = run_stage(run_settings, times, {key: values})
        detections = run.aggregate[key] >= QC_SUSPECT
        win_rows = nab.windows_to_rows(times, windows)
        for profile, weights in nab.PROFILES.items():
            per_profile[profile].append(nab.score_file(detections, win_rows, weights))
        swept.append(nab.LabelledScores(name, run.anomaly[key], win_rows))
        rows.append({"file": name, "rows": len(times), "windows": len(win_rows),
                     "detections": int(np.sum(detections))})
    decision = {p: round(nab.normalised(s), 2) for p, s in per_profile.items()}
    table = _sweep_table(swept)
    _echo_sweep(table, "anomaly score, threshold swept")
    typer.echo("")
    typer.echo("| profile | NAB score (gateway decision: aggregate flag >= 3) |\n|---|---|")
    for profile, value in decision.items():
        typer.echo(f"| {profile} | {value:.2f} |")
    if json_out is not None:
        json_out.write_text(json.dumps(
            {"sweep": table, "scores": decision, "files": rows}, indent=2) + "\n")
