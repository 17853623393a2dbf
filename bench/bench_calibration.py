"""Cost of the calibration stage per observation, against a pass-through baseline.

Run: .venv/bin/python bench/bench_calibration.py
Prints µs/observation for: an empty loop over the batch (baseline), the stage with no
assignment, offset/gain, multilinear with T/RH co-inputs, power-law blend, and κ-Köhler → linear.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from calibration.artefact import Artefact, FitInfo, InputSpec, SensorSpec, save_artefact
from calibration.models import ChainModel, EnsembleModel, KoehlerModel, LinearModel, Term
from calibration.settings import CalibrationSettings
from calibration.stage import CalibrationStage
from edge.model import Datastream, Observation, Provenance

N = 20_000
ROUNDS = 7

ARTEFACTS = {
    "gain": (LinearModel(intercept=1.0, terms=(Term(input=0, coef=0.9),)), ()),
    "multilinear": (
        LinearModel(
            intercept=2.0,
            terms=(Term(input=0, coef=0.8), Term(input=1, coef=-0.1), Term(input=2, coef=0.05)),
        ),
        ("temperature", "humidity"),
    ),
    "blend": (
        EnsembleModel(
            members=(
                LinearModel(intercept=0.1, terms=(Term(input=0, coef=0.01), Term(input=1, coef=0.02))),
                LinearModel(
                    intercept=-5.0,
                    terms=(Term(input=0, transform="log", coef=0.9), Term(input=1, coef=0.01)),
                    target_transform="log",
                ),
            )
        ),
        ("temperature",),
    ),
    "koehler_linear": (
        ChainModel(
            steps=(
                KoehlerModel(kappa=0.4, rh_input=1),
                LinearModel(intercept=1.0, terms=(Term(input=0, coef=0.9),)),
            )
        ),
        ("humidity",),
    ),
}


def make_artefact(name: str, model: object, co: tuple[str, ...]) -> Artefact:
    inputs = [InputSpec(name="signal", quantity="pm2_5", range=(0.0, 1000.0))]
    inputs += [InputSpec(name=q, quantity=q, range=(-40.0, 100.0)) for q in co]
    return Artefact(
        id=name, version="1", quantity="pm2_5", sensor=SensorSpec(model="SDS011"),
        inputs=tuple(inputs), model=model, fit=FitInfo(),  # type: ignore[arg-type]
    )


def batch(sensor: str) -> list[Observation]:
    prov = Provenance(sensor_model="SDS011", sensor_serial="1")
    pm = Datastream("gw", sensor, "pm2_5")
    env = [Datastream("gw", sensor, "temperature"), Datastream("gw", sensor, "humidity")]
    out = [Observation(env[0], 12.0, 0, prov), Observation(env[1], 60.0, 0, prov)]
    out += [Observation(pm, 10.0 + (i % 50), i * 1000 % 300_000, prov) for i in range(N)]
    return out


def timed(fn, obs_factory) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(ROUNDS):
        obs = obs_factory()
        t0 = time.perf_counter()
        fn(obs)
        best = min(best, time.perf_counter() - t0)
    return best / N * 1e6


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for name, (model, co) in ARTEFACTS.items():
            save_artefact(make_artefact(name, model, co), Path(tmp) / f"{name}.json")

        def baseline(obs: list[Observation]) -> None:
            for o in obs:  # what any stage must at least do: visit each observation
                if o.quality is None:
                    pass

        base = timed(baseline, lambda: batch("s"))
        print(f"baseline loop            {base:6.3f} µs/obs")
        none_stage = CalibrationStage(CalibrationSettings(artefact_dir=Path(tmp)))
        t = timed(none_stage.process, lambda: batch("s"))
        print(f"stage, nothing assigned  {t:6.3f} µs/obs  ({t / base:5.1f}× baseline)")
        for name in ARTEFACTS:
            settings = CalibrationSettings.model_validate(
                {"artefact_dir": tmp, "assign": [{"artefact": name, "quantity": "pm2_5", "sensor_id": "s"}]}
            )
            stage = CalibrationStage(settings)
            t = timed(stage.process, lambda: batch("s"))
            assert stage.stats["calibrated"] > 0, stage.stats
            print(f"stage, {name:17s} {t:6.3f} µs/obs  ({t / base:5.1f}× baseline)  budget 5 µs")


if __name__ == "__main__":
    main()
