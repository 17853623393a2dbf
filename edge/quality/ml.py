"""TinyML anomaly scoring: model artefacts, window features, and the LiteRT runner.

A model artefact is a folder holding ``model.tflite`` and ``model.json`` (the window
definition, normalisation statistics, score threshold, and training provenance). The
features of one window are, in this order:

- ``window`` values of the datastream, oldest first, each ``(log1p(max(x, 0)) - mean) / std``,
- the co-measured quantities (e.g. temperature, humidity of the same sensor), z-scored,
- ``sin`` and ``cos`` of the UTC hour of day.

A window is a number of samples, so a model is only valid at the cadence it was trained at
(``sample_period_s``): the stage does not score streams whose usual interval is more than a
factor of two away from it.

The same function (:func:`feature_matrix`) builds training rows and, one row at a time
(:class:`WindowFeatures`), the gateway's rows, so the two cannot disagree.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_MS_PER_HOUR = 3_600_000.0
_TWO_PI_PER_DAY = 2.0 * math.pi / 24.0


@dataclass
class ModelArtefact:
    """Everything the gateway needs to score one quantity."""

    name: str
    version: str
    quantity: str
    window: int
    co_features: list[str]
    norm: dict[str, tuple[float, float]]  # feature → (mean, std); "value" for the stream
    threshold: float
    tflite: bytes
    layers: list[int]
    meta: dict[str, Any] = field(default_factory=dict)
    sample_period_s: float | None = None  # cadence of the training data; None: unknown
    folder: Path | None = None  # where it was loaded from (retraining writes back there)

    @property
    def n_features(self) -> int:
        return self.window + len(self.co_features) + 2

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "version": self.version,
            "quantity": self.quantity,
            "window": {
                "length": self.window,
                "sample_period_s": self.sample_period_s,
                "transform": "log1p(max(x,0)), z-score",
                "co_features": self.co_features,
                "time_features": ["hour_sin", "hour_cos"],
            },
            "normalisation": {k: {"mean": m, "std": s} for k, (m, s) in self.norm.items()},
            "threshold": self.threshold,
            "layers": self.layers,
            "tflite_sha256": hashlib.sha256(self.tflite).hexdigest(),
            "tflite_bytes": len(self.tflite),
            **self.meta,
        }


def save_artefact(artefact: ModelArtefact, folder: Path) -> Path:
    """Write ``model.tflite`` and ``model.json`` into ``folder`` (created)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.tflite").write_bytes(artefact.tflite)
    (folder / "model.json").write_text(json.dumps(artefact.to_json(), indent=2) + "\n")
    return folder


def load_artefact(folder: Path) -> ModelArtefact:
    """Read an artefact folder; raises ValueError naming what is wrong."""
    meta = json.loads((folder / "model.json").read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{folder}: format_version {meta.get('format_version')!r}, expected {FORMAT_VERSION}"
        )
    tflite = (folder / "model.tflite").read_bytes()
    if hashlib.sha256(tflite).hexdigest() != meta["tflite_sha256"]:
        raise ValueError(f"{folder}: model.tflite does not match tflite_sha256 in model.json")
    known = {
        "format_version", "name", "version", "quantity", "window", "normalisation",
        "threshold", "layers", "tflite_sha256", "tflite_bytes",
    }
    return ModelArtefact(
        name=meta["name"],
        version=meta["version"],
        quantity=meta["quantity"],
        window=int(meta["window"]["length"]),
        co_features=list(meta["window"]["co_features"]),
        norm={k: (float(v["mean"]), float(v["std"])) for k, v in meta["normalisation"].items()},
        threshold=float(meta["threshold"]),
        tflite=tflite,
        layers=[int(n) for n in meta["layers"]],
        sample_period_s=(
            float(meta["window"]["sample_period_s"])
            if meta["window"].get("sample_period_s") is not None
            else None
        ),
        meta={k: v for k, v in meta.items() if k not in known},
        folder=folder,
    )


def shipped_model_dir() -> Path:
    return Path(str(resources.files("edge.quality") / "models"))


def discover(model_dir: Path | None) -> list[ModelArtefact]:
    """Every artefact folder under ``model_dir`` (default: the shipped models)."""
    root = model_dir or shipped_model_dir()
    if not root.is_dir():
        return []
    found = []
    for meta in sorted(root.glob("*/model.json")):
        found.append(load_artefact(meta.parent))
    return found


def _hour_features(times_ms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    hours = (times_ms.astype(np.float64) / _MS_PER_HOUR) % 24.0
    return np.sin(hours * _TWO_PI_PER_DAY), np.cos(hours * _TWO_PI_PER_DAY)


def feature_matrix(
    values: np.ndarray,
    times_ms: np.ndarray,
    co: dict[str, np.ndarray],
    artefact_window: int,
    norm: dict[str, tuple[float, float]],
    co_features: list[str],
) -> tuple[np.ndarray, np.ndarray]:
    """Rows for every index whose window (and co-features) is complete.

    Returns ``(rows float32 [n, features], index of the window's last value)``. Windows are
    taken over consecutive samples; any NaN in the window or co-features drops the row.
    """
    w = artefact_window
    mean, std = norm["value"]
    z = (np.log1p(np.maximum(values, 0.0)) - mean) / std
    n = len(values)
    if n < w:
        return np.zeros((0, w + len(co_features) + 2), np.float32), np.zeros(0, np.int64)
    windows = np.lib.stride_tricks.sliding_window_view(z, w)
    last = np.arange(w - 1, n)
    cols = [windows]
    for name in co_features:
        m, s = norm[name]
        cols.append(((co[name][last] - m) / s)[:, None])
    hs, hc = _hour_features(times_ms[last])
    cols += [hs[:, None], hc[:, None]]
    rows = np.concatenate(cols, axis=1)
    ok = np.all(np.isfinite(rows), axis=1)
    return rows[ok].astype(np.float32), last[ok]


class WindowFeatures:
    """The streaming twin of :func:`feature_matrix` for one datastream."""

    __slots__ = ("_co", "_mean", "_n", "_std", "_w", "row")

    def __init__(self, artefact: ModelArtefact) -> None:
        self._w = artefact.window
        self._mean, self._std = artefact.norm["value"]
        self._co = [artefact.norm[name] for name in artefact.co_features]
        self._n = 0
        self.row = np.zeros((1, artefact.n_features), dtype=np.float32)

    def push(self, x: float, ms: int, co_values: list[float]) -> bool:
        """Add a value; True when ``row`` holds a complete window ending at ``x``."""
        w = self._w
        row = self.row[0]
        row[: w - 1] = row[1:w]
        row[w - 1] = (math.log1p(x if x > 0.0 else 0.0) - self._mean) / self._std
        self._n += 1
        for i, (m, s) in enumerate(self._co):
            row[w + i] = (co_values[i] - m) / s
        hour = (ms / _MS_PER_HOUR) % 24.0
        k = w + len(self._co)
        row[k] = math.sin(hour * _TWO_PI_PER_DAY)
        row[k + 1] = math.cos(hour * _TWO_PI_PER_DAY)
        return self._n >= w

    def replace_last(self, x: float) -> None:
        """Overwrite the newest value (used to keep rejected values out of later windows)."""
        self.row[0, self._w - 1] = (math.log1p(x if x > 0.0 else 0.0) - self._mean) / self._std


class MlUnavailable(RuntimeError):
    """The LiteRT runtime cannot be imported or the model cannot be loaded."""


class LiteRtScorer:
    """One LiteRT interpreter per model; ``score(row)`` → reconstruction error."""

    def __init__(self, artefact: ModelArtefact) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as exc:  # the ml extra is not installed
            raise MlUnavailable(f"ai-edge-litert is not installed ({exc})") from exc
        try:
            self._interp = Interpreter(model_content=artefact.tflite, num_threads=1)
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise MlUnavailable(f"model {artefact.name!r} does not load: {exc}") from exc
        self._in = self._interp.get_input_details()[0]["index"]
        self._out = self._interp.get_output_details()[0]["index"]
        self.artefact = artefact

    def score(self, row: np.ndarray) -> float:
        interp = self._interp
        interp.set_tensor(self._in, row)
        interp.invoke()
        return float(interp.get_tensor(self._out)[0])

    def score_many(self, rows: np.ndarray) -> np.ndarray:
        """Score rows one by one (the graph has batch size 1)."""
        return np.array([self.score(rows[i : i + 1]) for i in range(len(rows))], np.float32)
