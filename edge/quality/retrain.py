"""Gateway-side retraining of the TinyML models from the gateway's own recent clean data.

Each datastream scored by a model keeps its recent history at the model's cadence (one row
per scored value: time, value — NaN where the value was flagged — and the co-measured
values), at most ``ml.history_days`` days. When ``ml.retrain`` is on, the stage retrains each
model every ``ml.retrain_interval_s`` from the longest such history with the same
deterministic numpy pipeline as ``duet-edge quality train`` (same seed, 80 % fit / 20 %
threshold), writes the artefact into ``ml.model_dir`` (``model.tflite`` first, then
``model.json``; a reader in between sees a hash mismatch and retries) and hot-swaps it.
"""

from __future__ import annotations

import math
import os
from collections import deque
from pathlib import Path

import numpy as np

from edge.quality.ml import ModelArtefact
from edge.quality.train import Series, TrainConfig, train

FIT_FRACTION = 0.8
CHECK_FRACTION = 0.2


class History:
    """Recent rows of one scored datastream: (time ms, value or NaN, co-measured values)."""

    __slots__ = ("rows",)

    def __init__(self, days: int, period_s: float) -> None:
        self.rows: deque[tuple[float, ...]] = deque(
            maxlen=max(1, int(days * 86_400 / max(period_s, 1.0))))

    def add(self, t_ms: int, value: float, co: list[float], clean: bool) -> None:
        self.rows.append((float(t_ms), value if clean else math.nan, *co))

    def series(self, quantity: str, co_features: list[str]) -> Series:
        data = np.array(self.rows, np.float64).reshape(len(self.rows), 2 + len(co_features))
        values = {quantity: data[:, 1]}
        for i, name in enumerate(co_features):
            values[name] = data[:, 2 + i]
        return Series(data[:, 0].astype(np.int64), values)


def retrain(old: ModelArtefact, series: Series) -> ModelArtefact:
    """A new artefact of the same shape from ``series`` (deterministic: the old one's seed)."""
    training = old.meta.get("training", {})
    seed = training.get("seed", 7) if isinstance(training, dict) else 7
    cfg = TrainConfig(
        quantity=old.quantity,
        co_features=tuple(old.co_features),
        window=old.window,
        seed=int(seed),
        train_fraction=FIT_FRACTION,
        val_fraction=CHECK_FRACTION,
    )
    artefact = train(series, cfg, name=old.name)
    artefact.meta["retrained_on_gateway"] = True
    return artefact


def write_artefact(artefact: ModelArtefact, folder: Path) -> Path:
    """Write ``model.tflite`` then ``model.json`` into ``folder``, each by atomic rename."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    for name, data in (("model.tflite", artefact.tflite),
                       ("model.json", (json.dumps(artefact.to_json(), indent=2) + "\n").encode())):
        tmp = folder / f".{name}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, folder / name)
    return folder
