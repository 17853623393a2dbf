"""Train the dense autoencoder in numpy (seeded Adam), pick the threshold, write the artefact."""

from __future__ import annotations

import csv
import itertools
import platform
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from edge.quality import uci
from edge.quality.ml import ModelArtefact, feature_matrix
from edge.quality.tflite_writer import Layer, build_autoencoder, reference_score

MAX_MODEL_BYTES = 32 * 1024
MIN_TRAIN_ROWS = 100  # complete windows needed to fit the autoencoder
MIN_VAL_ROWS = 20  # ... and to choose its threshold


class TrainingDataError(ValueError):
    """Too little usable data to train; the message says how much is needed."""


@dataclass(frozen=True)
class TrainConfig:
    quantity: str = "co"
    co_features: tuple[str, ...] = ("temperature", "humidity")
    window: int = 12
    hidden: tuple[int, ...] = (16, 4)
    epochs: int = 60
    batch: int = 64
    learning_rate: float = 3e-3
    seed: int = 7
    train_fraction: float = 0.25  # first part of the series (time-ordered)
    val_fraction: float = 0.10  # the part right after it
    threshold_quantile: float = 0.998
    threshold_margin: float = 1.5


@dataclass(frozen=True)
class Series:
    times_ms: np.ndarray
    values: dict[str, np.ndarray]


def load_series(path: Path | None, sensor: str | None = None) -> Series:
    """UCI file (default), the twin receiver's SQLite store (``.db``/``.sqlite``, one
    ``sensor``), or a CSV with ``timestamp`` (ISO 8601 or epoch ms) + quantity columns."""
    if path is not None and path.suffix in (".db", ".sqlite", ".sqlite3"):
        if not sensor:
            known = twin_store_sensors(path)
            raise ValueError("a twin store holds many sensors: say which one with --sensor "
                             f"(in this store: {', '.join(known) or 'none'})")
        return load_twin_store(path, sensor)
    if path is None or _is_uci(path):
        data = uci.load(path)
        return Series(data.times_ms, data.values)
    times: list[int] = []
    cols: dict[str, list[float]] = {}
    with path.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            stamp = row.pop("timestamp")
            times.append(_parse_time(stamp))
            for key, text in row.items():
                cols.setdefault(key, []).append(float(text) if text not in ("", None) else np.nan)
    order = np.argsort(np.asarray(times, np.int64), kind="stable")
    return Series(
        np.asarray(times, np.int64)[order],
        {k: np.asarray(v, np.float64)[order] for k, v in cols.items()},
    )


def twin_store_sensors(path: Path) -> list[str]:
    """The sensor ids in a twin receiver's store (ValueError if it is not one)."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [r[0] for r in con.execute("SELECT DISTINCT sensor FROM stream ORDER BY 1")]
    except sqlite3.DatabaseError as exc:
        raise ValueError(f"not a twin store ({exc})") from None
    finally:
        con.close()


def load_twin_store(path: Path, sensor: str) -> Series:
    """Observations of ``sensor`` as received by the twin (edge/ingest/sqlite_store.py, its
    ``observations`` view), one column per quantity, one row per phenomenon time. Values the
    gateway flagged suspect or worse are left out (NaN): training wants clean history.
    """
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = con.execute(
            "SELECT phenomenon_ms, quantity, result, quality_flag FROM observations "
            "WHERE sensor=? ORDER BY phenomenon_ms, seq", (sensor,)
        ).fetchall()
    except sqlite3.DatabaseError as exc:
        raise ValueError(f"not a twin store ({exc})") from None
    finally:
        con.close()
    if not rows:
        known = ", ".join(twin_store_sensors(path)) or "none"
        raise ValueError(f"no observations of sensor {sensor!r} (in this store: {known})")
    times = sorted({int(r[0]) for r in rows})
    index = {t: i for i, t in enumerate(times)}
    cols: dict[str, np.ndarray] = {}
    for ms, code, result, flag in rows:
        if flag in (3, 4) or result is None:  # flagged, or NaN (SQLite keeps it as NULL)
            continue
        col = cols.get(code)
        if col is None:
            col = cols[code] = np.full(len(times), np.nan)
        col[index[int(ms)]] = float(result)
    return Series(np.asarray(times, np.int64), cols)


def _is_uci(path: Path) -> bool:
    with path.open(encoding="utf-8", errors="replace") as fh:
        return fh.readline().startswith("Date;Time")


def _parse_time(text: str) -> int:
    text = text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return int(stamp.timestamp() * 1000)


def _init_layers(dims: list[int], rng: np.random.Generator) -> list[Layer]:
    layers = []
    for n_in, n_out in itertools.pairwise(dims):
        w = rng.normal(0.0, np.sqrt(2.0 / n_in), size=(n_out, n_in)).astype(np.float32)
        layers.append((w, np.zeros(n_out, np.float32)))
    return layers


def _forward(layers: list[Layer], x: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    acts = [x]
    h = x
    for i, (w, b) in enumerate(layers):
        h = h @ w.T + b
        if i < len(layers) - 1:
            h = np.maximum(h, 0.0)
        acts.append(h)
    return h, acts


def fit_autoencoder(x: np.ndarray, cfg: TrainConfig) -> list[Layer]:
    """Minimise mean squared reconstruction error with Adam; deterministic for a seed."""
    rng = np.random.default_rng(cfg.seed)
    dims = [x.shape[1], *cfg.hidden, *reversed(cfg.hidden[:-1]), x.shape[1]]
    layers = _init_layers(dims, rng)
    params = [p for layer in layers for p in layer]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    step = 0
    for _ in range(cfg.epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x), cfg.batch):
            xb = x[order[start : start + cfg.batch]]
            out, acts = _forward(layers, xb)
            grad = 2.0 * (out - xb) / xb.size
            grads: list[np.ndarray] = []
            for i in range(len(layers) - 1, -1, -1):
                w, _ = layers[i]
                if i < len(layers) - 1:
                    grad = grad * (acts[i + 1] > 0)
                grads = [grad.T @ acts[i], grad.sum(axis=0), *grads]
                grad = grad @ w
            step += 1
            for j, (p, g) in enumerate(zip(params, grads, strict=True)):
                m[j] = beta1 * m[j] + (1 - beta1) * g
                v[j] = beta2 * v[j] + (1 - beta2) * g * g
                mhat = m[j] / (1 - beta1**step)
                vhat = v[j] / (1 - beta2**step)
                p -= (cfg.learning_rate * mhat / (np.sqrt(vhat) + eps)).astype(np.float32)
    return [(params[2 * i], params[2 * i + 1]) for i in range(len(layers))]


def train(series: Series, cfg: TrainConfig, name: str | None = None) -> ModelArtefact:
    """Fit on the first ``train_fraction``, choose the threshold on the next ``val_fraction``."""
    values = series.values[cfg.quantity]
    n = len(values)
    n_train = int(n * cfg.train_fraction)
    n_val = int(n * cfg.val_fraction)
    train_part = values[:n_train]
    finite = train_part[np.isfinite(train_part)]
    usable = min([len(finite)] + [int(np.sum(np.isfinite(series.values[f][:n_train])))
                                  for f in cfg.co_features])
    if usable < MIN_TRAIN_ROWS:
        raise TrainingDataError(
            f"the training part (first {cfg.train_fraction:.0%} of the series, {n_train} rows) "
            f"has {usable} usable values of {', '.join((cfg.quantity, *cfg.co_features))} "
            f"(need {MIN_TRAIN_ROWS}): give more data or a larger --train-fraction"
        )
    logv = np.log1p(np.maximum(finite, 0.0))
    norm: dict[str, tuple[float, float]] = {
        "value": (float(logv.mean()), float(logv.std() or 1.0))
    }
    for feat in cfg.co_features:
        col = series.values[feat][:n_train]
        col = col[np.isfinite(col)]
        norm[feat] = (float(col.mean()), float(col.std() or 1.0))
    co = {f: series.values[f] for f in cfg.co_features}

    def rows(lo: int, hi: int) -> np.ndarray:
        sub_co = {f: c[lo:hi] for f, c in co.items()}
        r, _ = feature_matrix(values[lo:hi], series.times_ms[lo:hi], sub_co, cfg.window, norm,
                              list(cfg.co_features))
        return r

    x_train = rows(0, n_train)
    x_val = rows(n_train, n_train + n_val)
    if len(x_train) < MIN_TRAIN_ROWS or len(x_val) < MIN_VAL_ROWS:
        raise TrainingDataError(
            f"only {len(x_train)} training and {len(x_val)} validation windows of "
            f"{cfg.window} values with {', '.join(cfg.co_features) or 'no co-features'} "
            f"(need {MIN_TRAIN_ROWS} and {MIN_VAL_ROWS}): give more data (about "
            f"{(MIN_TRAIN_ROWS + cfg.window) * 10} complete rows) or a larger --train-fraction"
        )
    layers = fit_autoencoder(x_train, cfg)
    val_scores = reference_score(layers, x_val)
    threshold = float(np.quantile(val_scores, cfg.threshold_quantile) * cfg.threshold_margin)
    tflite = build_autoencoder(layers, description=f"duet-edge qc {cfg.quantity}")
    if len(tflite) > MAX_MODEL_BYTES:
        raise ValueError(f"model is {len(tflite)} bytes, above the {MAX_MODEL_BYTES} byte budget")
    dims = [x_train.shape[1], *[int(w.shape[0]) for w, _ in layers]]
    version = datetime.fromtimestamp(int(series.times_ms[n_train - 1]) / 1000, UTC).strftime(
        "%Y%m%d"
    ) + f"-s{cfg.seed}"
    return ModelArtefact(
        name=name or f"{cfg.quantity}-autoencoder",
        version=version,
        quantity=cfg.quantity,
        window=cfg.window,
        co_features=list(cfg.co_features),
        norm=norm,
        threshold=threshold,
        tflite=tflite,
        layers=dims,
        sample_period_s=float(np.median(np.diff(series.times_ms[:n_train]))) / 1000.0,
        meta={
            "training": {
                "seed": cfg.seed,
                "epochs": cfg.epochs,
                "train_rows": len(x_train),
                "val_rows": len(x_val),
                "train_until_ms": int(series.times_ms[n_train - 1]),
                "val_until_ms": int(series.times_ms[min(n - 1, n_train + n_val - 1)]),
                "threshold_quantile": cfg.threshold_quantile,
                "threshold_margin": cfg.threshold_margin,
                "train_loss": float(reference_score(layers, x_train).mean()),
                "val_loss": float(val_scores.mean()),
                # floating-point sums round differently across numpy builds and CPUs: the
                # bytes reproduce where these match (docs/quality.md)
                "numpy": np.__version__,
                "machine": platform.machine(),
            },
            "weights": [[w.tolist(), b.tolist()] for w, b in layers],
        },
    )


def layers_of(artefact: ModelArtefact) -> list[Layer]:
    """The numpy weights stored in model.json (for the reference scorer and tests)."""
    return [
        (np.asarray(w, np.float32), np.asarray(b, np.float32))
        for w, b in artefact.meta["weights"]
    ]
