"""The gateway's CalibrationStage: flags, co-inputs, provenance, settings, and a live sensor."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import ValidationError

from calibration.models import LinearModel, Term
from calibration.settings import CalibrationSettings
from calibration.stage import CalibrationConfigError, CalibrationStage
from edge.model import (
    QC_FAIL,
    QC_PASS,
    QC_SUSPECT,
    Datastream,
    Observation,
    Provenance,
    Quality,
)
from tests.calibration.conftest import koehler_artefact, make_artefact

PROV = Provenance(sensor_model="SDS011", sensor_serial="58D9", firmware_version="18-11-16")
PM = Datastream("gw", "sds-1", "pm2_5")
RH = Datastream("gw", "bme-1", "humidity")


def stage_for(directory: Path, **assignment: object) -> CalibrationStage:
    settings = CalibrationSettings.model_validate(
        {"artefact_dir": str(directory), "assign": [assignment], "max_co_input_age_s": 120}
    )
    return CalibrationStage(settings)


def pm(value: float, t_ms: int = 1_000_000, prov: Provenance = PROV) -> Observation:
    return Observation(PM, value, t_ms, prov)


def rh(value: float, t_ms: int = 1_000_000) -> Observation:
    return Observation(RH, value, t_ms, Provenance(sensor_model="BME280"))


def test_applies_artefact_keeps_raw_and_sets_provenance(artefact_dir: Callable[..., Path]) -> None:
    stage = stage_for(artefact_dir(make_artefact()), artefact="pm25-test", quantity="pm2_5")
    obs = [pm(10.0), pm(20.0)]
    out = stage.process(obs)
    assert out is obs
    assert [o.result for o in obs] == [6.0, 11.0]  # 1 + 0.5·x
    assert [o.raw_result for o in obs] == [10.0, 20.0]
    assert obs[0].provenance.calibration_id == "pm25-test"
    assert obs[0].provenance.calibration_version == "1"
    assert obs[0].provenance.sensor_serial == "58D9"  # the rest of the provenance is kept
    assert obs[0].quality is not None and obs[0].quality.tests["calibration"] == QC_PASS
    assert PROV.calibration_id == ""  # the interned provenance is not mutated


def test_input_outside_fitted_range_is_flagged_suspect_not_hidden(
    artefact_dir: Callable[..., Path],
) -> None:
    stage = stage_for(artefact_dir(make_artefact()), artefact="pm25-test", quantity="pm2_5")
    obs = pm(500.0)  # fitted on 0–200
    obs.quality = Quality()
    obs.quality.set("gross_range", QC_PASS)
    stage.process([obs])
    assert obs.result == pytest.approx(251.0)
    assert obs.raw_result == 500.0
    assert obs.quality.tests == {"gross_range": QC_PASS, "calibration": QC_SUSPECT}
    assert obs.quality.aggregate == QC_SUSPECT
    assert stage.stats["out_of_range"] == 1


def test_co_input_from_another_datastream_even_later_in_the_batch(
    artefact_dir: Callable[..., Path],
) -> None:
    stage = stage_for(artefact_dir(koehler_artefact()), artefact="pm25-koehler", quantity="pm2_5",
                      sensor_id="sds-1", co_inputs={"rh": "bme-1/humidity"})
    obs = pm(30.0)
    stage.process([obs, rh(80.0)])
    assert obs.result == pytest.approx(30.0 / 2.6, rel=1e-9)  # κ 0.4 at RH 80 %
    assert obs.quality is not None and obs.quality.tests["calibration"] == QC_PASS
    later = pm(30.0, t_ms=1_060_000)  # next batch, RH from the previous one is 60 s old: fine
    stage.process([later])
    assert later.raw_result == 30.0


@pytest.mark.parametrize("rh_first", [True, False])
def test_first_observation_after_start_up_uses_rh_of_the_same_sensor(
    artefact_dir: Callable[..., Path], rh_first: bool,
) -> None:
    """Issue 16 item 7: T/RH from the PM sensor itself (no co_inputs mapping) must serve the very
    first PM observation after start-up, whatever the order inside the batch."""
    stage = stage_for(artefact_dir(koehler_artefact()), artefact="pm25-koehler", quantity="pm2_5",
                      sensor_id="sds-1")  # no co_inputs: RH comes from 'sds-1' itself
    own_rh = Observation(Datastream("gw", "sds-1", "humidity"), 80.0, 1_000_000, PROV)
    first = pm(30.0)
    stage.process([own_rh, first] if rh_first else [first, own_rh])
    assert first.raw_result == 30.0, stage.stats
    assert first.quality is not None and first.quality.tests["calibration"] == QC_PASS
    assert stage.stats["missing_input"] == 0 and stage.stats["calibrated"] == 1


def test_model_wide_assignment_takes_each_units_own_rh(artefact_dir: Callable[..., Path]) -> None:
    """An assignment by sensor model (no sensor_id) serves every unit with its own T/RH."""
    stage = stage_for(artefact_dir(koehler_artefact()), artefact="pm25-koehler", quantity="pm2_5",
                      sensor_model="SDS011")
    batch = []
    for unit, rh_value in (("sds-1", 80.0), ("sds-2", 50.0)):
        batch += [Observation(Datastream("gw", unit, "pm2_5"), 30.0, 1_000_000, PROV),
                  Observation(Datastream("gw", unit, "humidity"), rh_value, 1_000_000, PROV)]
    stage.process(batch)
    assert batch[0].result == pytest.approx(30.0 / 2.6)  # κ 0.4 at 80 %: growth 2.6
    assert batch[2].result == pytest.approx(30.0 / 1.4)  # κ 0.4 at 50 %: growth 1.4
    lonely = Observation(Datastream("gw", "sds-3", "pm2_5"), 30.0, 1_000_000, PROV)
    stage.process([lonely])  # a unit whose RH never arrived is not given another unit's RH
    assert lonely.raw_result is None and stage.stats["missing_input"] == 1


def test_missing_or_stale_co_input_leaves_value_uncalibrated_and_flagged(
    artefact_dir: Callable[..., Path],
) -> None:
    stage = stage_for(artefact_dir(koehler_artefact()), artefact="pm25-koehler", quantity="pm2_5",
                      sensor_id="sds-1", co_inputs={"rh": "bme-1/humidity"})
    first = pm(30.0)
    stage.process([first])  # no RH seen yet
    assert first.result == 30.0 and first.raw_result is None
    assert first.provenance.calibration_id == ""
    assert first.quality is not None and first.quality.tests["calibration"] == QC_FAIL
    stage.process([rh(80.0, t_ms=0)])
    stale = pm(30.0, t_ms=1_000_000)  # RH is 1000 s older than the PM value (max 120 s)
    stage.process([stale])
    assert stale.raw_result is None and stale.quality is not None
    assert stale.quality.tests["calibration"] == QC_FAIL
    assert stage.stats["missing_input"] == 2


def test_rh_is_clamped_before_the_model(artefact_dir: Callable[..., Path]) -> None:
    stage = stage_for(artefact_dir(koehler_artefact()), artefact="pm25-koehler", quantity="pm2_5",
                      sensor_id="sds-1", co_inputs={"rh": "bme-1/humidity"})
    wet = pm(30.0)
    stage.process([rh(100.0), wet])  # 100 % → clamped to 95 % (no division by zero)
    assert wet.result == pytest.approx(30.0 / 8.6, rel=1e-9)
    assert wet.quality is not None and wet.quality.tests["calibration"] == QC_SUSPECT  # > 90 fitted


def test_wrong_sensor_model_or_serial_is_not_calibrated(artefact_dir: Callable[..., Path]) -> None:
    d = artefact_dir(make_artefact(serial="AAAA"))
    stage = stage_for(d, artefact="pm25-test", quantity="pm2_5")
    obs = pm(10.0)
    stage.process([obs])
    assert obs.result == 10.0 and obs.quality is not None
    assert obs.quality.tests["calibration"] == QC_FAIL
    assert stage.stats["sensor_mismatch"] == 1


def test_bad_values_never_raise(artefact_dir: Callable[..., Path]) -> None:
    power = make_artefact(LinearModel(intercept=0.0, terms=(Term(input=0, transform="log", coef=1.0),),
                                      target_transform="log"), art_id="pow")
    stage = stage_for(artefact_dir(power), artefact="pow", quantity="pm2_5")
    bad = [pm(-1.0), pm(math.nan), pm(math.inf)]
    stage.process(bad)
    assert all(o.quality is not None and o.quality.tests["calibration"] == QC_FAIL for o in bad)
    assert bad[0].result == -1.0


def test_unassigned_streams_pass_untouched(artefact_dir: Callable[..., Path]) -> None:
    stage = stage_for(artefact_dir(make_artefact()), artefact="pm25-test", quantity="pm2_5",
                      sensor_id="other")
    obs = pm(10.0)
    stage.process([obs])
    assert obs.result == 10.0 and obs.quality is None


def test_output_quantity_relabelled_for_presets(tmp_path: Path) -> None:
    from calibration.artefact import purpleair_epa_preset, save_artefact

    d = tmp_path / "a"
    d.mkdir()
    save_artefact(purpleair_epa_preset("PMS5003"), d / "epa.json")
    stage = stage_for(d, artefact="us-epa-purpleair-2021", quantity="pm2_5_cf1",
                      sensor_id="pms-1", co_inputs={"rh": "bme-1/humidity"})
    obs = Observation(Datastream("gw", "pms-1", "pm2_5_cf1"), 20.0, 1_000_000,
                      Provenance(sensor_model="PMS5003"))
    stage.process([rh(50.0), obs])
    assert obs.result == pytest.approx(11.92)
    assert obs.stream.quantity_code == "pm2_5"


def test_configuration_errors_are_explicit(artefact_dir: Callable[..., Path], tmp_path: Path) -> None:
    d = artefact_dir(koehler_artefact())
    with pytest.raises(CalibrationConfigError, match=r"'nope' not found .* artefacts there: pm25-koehler"):
        stage_for(d, artefact="nope", quantity="pm2_5")
    with pytest.raises(CalibrationConfigError, match="co_inputs \\['t'\\] are not inputs"):
        stage_for(d, artefact="pm25-koehler", quantity="pm2_5", sensor_id="s",
                  co_inputs={"t": "bme-1/temperature"})
    with pytest.raises(CalibrationConfigError, match="quantity 'pm10' does not match"):
        stage_for(d, artefact="pm25-koehler", quantity="pm10")
    with pytest.raises(ValidationError, match="rh_clamp"):
        CalibrationSettings.model_validate({"artefact_dir": str(d), "rh_clamp": [50, 120]})
    with pytest.raises(ValidationError, match=r"co_inputs\.rh = 'bme-1' must be"):
        CalibrationSettings.model_validate({"artefact_dir": str(d), "assign": [
            {"artefact": "x", "quantity": "pm2_5", "co_inputs": {"rh": "bme-1"}}]})
    with pytest.raises(ValidationError, match="is not a directory"):
        CalibrationSettings.model_validate({"artefact_dir": str(tmp_path / "missing")})
    with pytest.raises(ValidationError, match="Extra inputs"):
        CalibrationSettings.model_validate({"artefact_dir": str(d), "rh_clmp": [0, 90]})


def test_gateway_applies_artefact_to_a_live_emulated_sds011(
    artefact_dir: Callable[..., Path], tmp_path: Path
) -> None:
    """Real pty + SDS011 emulator → the lead's serial source → Gateway.emit → this stage."""
    from edge.config import parse_config
    from edge.runtime import Gateway
    from edge.seams import SourceContext
    from hil.emulators import EMULATORS

    d = artefact_dir(koehler_artefact())
    emu = EMULATORS["sds011"](tmp_path / "sds-link", interval_s=0.02).start()

    class HumiditySource:
        """A second sensor supplying RH, as a BME280 on the same gateway would."""

        name = "bme-1"

        async def run(self, ctx: SourceContext) -> None:
            stream = Datastream(ctx.gateway_id, "bme-1", "humidity")
            prov = Provenance(sensor_model="BME280")
            while True:
                ctx.emit([Observation(stream, 80.0, ctx.clock_ms(), prov)])
                await asyncio.sleep(0.05)

    toml = f"""
[gateway]
id = "gw-cal"
data_dir = "{tmp_path / 'data'}"

[[sources]]
name = "sds-1"
type = "sds011"
port = "{emu.port}"
interval_s = 0.001
options = {{ warmup_s = 0 }}

[calibration]
artefact_dir = "{d}"
max_co_input_age_s = 30

[[calibration.assign]]
artefact = "pm25-koehler"
quantity = "pm2_5"
sensor_model = "SDS011"
co_inputs = {{ rh = "bme-1/humidity" }}
"""
    config = parse_config(toml)
    try:
        gateway = Gateway(config, uplinks=[])
        gateway.sources.append(HumiditySource())
        from edge.seams import SourceHealth

        gateway.source_health["bme-1"] = SourceHealth("bme-1")
        seen: list[Observation] = []
        gateway.listeners.append(seen.extend)

        async def main() -> None:
            stop = asyncio.Event()
            task = asyncio.create_task(gateway.run(stop))
            for _ in range(200):  # bounded: at most 10 s
                await asyncio.sleep(0.05)
                if sum(1 for o in seen if o.raw_result is not None) >= 5:
                    break
            stop.set()
            await asyncio.wait_for(task, 10)

        asyncio.run(main())
    finally:
        emu.stop()
    calibrated = [o for o in seen if o.stream.quantity_code == "pm2_5" and o.raw_result is not None]
    assert len(calibrated) >= 5, f"stage stats: {gateway.stages[0].stats}"  # type: ignore[attr-defined]
    for o in calibrated:
        assert o.result == pytest.approx(o.raw_result / 2.6, rel=1e-6)
        assert o.provenance.calibration_id == "pm25-koehler"
        assert o.provenance.sensor_model == "SDS011"
    pm10 = [o for o in seen if o.stream.quantity_code == "pm10"]
    assert pm10 and all(o.raw_result is None for o in pm10)  # not assigned: untouched


def test_stage_never_raises_on_arbitrary_values(tmp_path: Path) -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from calibration.artefact import save_artefact
    from calibration.models import ChainModel, EnsembleModel, KoehlerModel

    d = tmp_path / "arb"
    d.mkdir()
    model = ChainModel(steps=(
        KoehlerModel(kappa=0.4, rh_input=1, rh_clamp=(0.0, 95.0)),
        EnsembleModel(members=(
            LinearModel(intercept=1.0, terms=(Term(input=0, coef=0.9),), target_transform="identity"),
            LinearModel(intercept=0.1, terms=(Term(input=0, transform="log", coef=1.0),),
                        target_transform="log"),
        ), weights=None),
    ))
    artefact = koehler_artefact("arb")
    save_artefact(artefact.model_copy(update={"model": model}), d / "arb.json")
    stage = stage_for(d, artefact="arb", quantity="pm2_5", sensor_id="sds-1",
                      co_inputs={"rh": "bme-1/humidity"})
    floats = st.floats(allow_nan=True, allow_infinity=True)

    @settings(max_examples=300, deadline=None)
    @given(values=st.lists(st.tuples(floats, floats, st.integers(0, 2_000_000)), max_size=8))
    def check(values: list[tuple[float, float, int]]) -> None:
        batch: list[Observation] = []
        for pm_value, rh_value, t_ms in values:
            batch += [rh(rh_value, t_ms), pm(pm_value, t_ms)]
        stage.process(batch)
        for o in batch:
            if o.stream is PM:
                assert o.quality is not None
                assert o.quality.tests["calibration"] in (QC_PASS, QC_SUSPECT, QC_FAIL)
                if o.quality.tests["calibration"] == QC_FAIL:
                    assert o.raw_result is None
                else:
                    assert math.isfinite(o.result) and o.raw_result is not None

    check()
