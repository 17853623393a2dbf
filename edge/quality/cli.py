"""``duet-edge quality …``: train anomaly models and evaluate the quality stage."""

from __future__ import annotations

import json
import time
import tomllib
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from edge.model import QC_SUSPECT
from edge.quality import nab
from edge.quality.faults import FAULT_TYPES

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Score, train and evaluate quality control.")

DataOpt = Annotated[
    Path | None,
    typer.Option("--data", help="UCI Air Quality CSV, the twin receiver's store (.db, with "
                 "--sensor), or a CSV with timestamp + quantity columns (default: the UCI copy "
                 "in the repository)."),
]


def _settings_from(config: Path | None):  # type: ignore[no-untyped-def]
    from edge.quality.settings import QualitySettings

    if config is None:
        return None
    data = tomllib.loads(config.read_text())
    return QualitySettings.model_validate(data.get("quality", {}))


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
    sensor: Annotated[
        str | None, typer.Option(help="With a twin store (.db) as --data: the sensor to use.")
    ] = None,
) -> None:
    """Train the window autoencoder on clean data and write model.tflite + model.json."""
    from edge.quality.ml import save_artefact
    from edge.quality.train import TrainConfig, load_series
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
    try:
        series = load_series(data, sensor)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    missing = [c for c in (quantity, *cfg.co_features) if c not in series.values]
    if missing:
        raise typer.BadParameter(
            f"columns {missing} not in the data; have: {', '.join(sorted(series.values))}"
        )
    artefact = fit(series, cfg, name=name)
    save_artefact(artefact, out)
    t = artefact.meta["training"]
    typer.echo(
        f"wrote {out} ({artefact.name}@{artefact.version}): {len(artefact.tflite)} B tflite, "
        f"layers {artefact.layers}, threshold {artefact.threshold:.4g}, "
        f"train rows {t['train_rows']}, val rows {t['val_rows']}, "
        f"{time.perf_counter() - started:.1f} s"
    )


@app.command()
def evaluate(
    data: DataOpt = None,
    quantity: Annotated[str, typer.Option(help="Quantity (column) to inject faults into.")] = "co",
    events: Annotated[int, typer.Option(min=1, help="Events per fault type.")] = 20,
    seed: Annotated[int, typer.Option()] = 1,
    twin_noise: Annotated[
        float, typer.Option(help="Noise of the simulated co-located twin (0: no twin).")
    ] = 0.03,
    faults: Annotated[str, typer.Option(help="Comma-separated fault types.")] = ",".join(
        FAULT_TYPES
    ),
    model_dir: Annotated[Path | None, typer.Option(help="Anomaly model folder.")] = None,
    config: Annotated[
        Path | None, typer.Option(help="TOML file whose [quality] section sets thresholds.")
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write JSON here.")] = None,
    nab_labels: Annotated[
        Path | None, typer.Option(help="NAB-style labels JSON: score labelled series instead.")
    ] = None,
    nab_data: Annotated[
        Path | None, typer.Option(help="Folder the label keys are relative to.")
    ] = None,
) -> None:
    """Fault-injection evaluation (default), or NAB scoring of labelled series."""
    settings = _settings_from(config)
    if nab_labels is not None:
        _evaluate_nab(nab_labels, nab_data or nab_labels.parent, quantity, settings, json_out)
        return
    from edge.quality.evaluate import evaluate as run
    from edge.quality.evaluate import format_report
    from edge.quality.train import load_series

    kinds = tuple(k for k in faults.split(",") if k)
    bad = [k for k in kinds if k not in FAULT_TYPES]
    if bad:
        raise typer.BadParameter(f"unknown fault types {bad}; known: {', '.join(FAULT_TYPES)}")
    report = run(load_series(data), quantity=quantity, n_events=events, seed=seed,
                 twin_noise=twin_noise, model_dir=model_dir, kinds=kinds, settings=settings)
    typer.echo(format_report(report))
    if json_out is not None:
        json_out.write_text(json.dumps(report.as_dict(), indent=2) + "\n")


def _evaluate_nab(labels_path: Path, root: Path, quantity: str, settings, json_out) -> None:  # type: ignore[no-untyped-def]
    from edge.quality.evaluate import run_stage
    from edge.quality.settings import MlSettings, QualitySettings

    base = settings or QualitySettings.model_validate({})
    run_settings = base.model_copy(update={"ml": MlSettings.model_validate({"enabled": False})})
    labels = nab.load_labels(labels_path)
    per_profile: dict[str, list[nab.FileScore]] = {p: [] for p in nab.PROFILES}
    rows = []
    for name, windows in sorted(labels.items()):
        times, values = nab.read_series(root / name)
        key = ("nab", quantity)
        agg, _, _ = run_stage(run_settings, times, {key: values})
        detections = agg[key] >= QC_SUSPECT
        win_rows = nab.windows_to_rows(times, windows)
        for profile, weights in nab.PROFILES.items():
            per_profile[profile].append(nab.score_file(detections, win_rows, weights))
        rows.append({"file": name, "rows": len(times), "windows": len(win_rows),
                     "detections": int(np.sum(detections))})
    result = {p: round(nab.normalised(s), 2) for p, s in per_profile.items()}
    typer.echo("| profile | NAB score |\n|---|---|")
    for profile, score in result.items():
        typer.echo(f"| {profile} | {score:.2f} |")
    if json_out is not None:
        json_out.write_text(json.dumps({"scores": result, "files": rows}, indent=2) + "\n")
