"""[quality] settings: per-quantity defaults, key-by-key overrides, informative errors."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from edge.quality.settings import DEFAULT_THRESHOLDS, QualitySettings


def test_defaults_per_quantity() -> None:
    s = QualitySettings()
    assert s.thresholds("pm2_5").fail_max == DEFAULT_THRESHOLDS["pm2_5"]["fail_max"]
    assert s.thresholds("humidity").rate_of_change_max == 0.2
    generic = s.thresholds("mox_response")  # no table entry: generic defaults
    assert generic.fail_min is None and generic.spike_suspect == 8.0


def test_override_merges_over_quantity_defaults() -> None:
    s = QualitySettings.model_validate({"quantities": {"pm2_5": {"spike_suspect": 10}}})
    th = s.thresholds("pm2_5")
    assert th.spike_suspect == 10
    assert th.fail_max == 1000  # the rest of the pm2_5 defaults stay


@pytest.mark.parametrize(("data", "words"), [
    ({"quantities": {"pm99": {}}}, ["pm99", "known"]),
    ({"quantities": {"pm2_5": {"spike_fail": 2}}}, ["spike_fail", "spike_suspect"]),
    ({"quantities": {"co": {"climatology": [{"months": [13], "min": 0, "max": 1}]}}},
     ["months", "13"]),
    ({"quantities": {"co": {"spikes": 3}}}, ["spikes", "Extra inputs"]),
    ({"colocated": [{"sensor_a": "a", "sensor_b": "b", "quantity": "nope"}]}, ["nope"]),
    ({"ml": {"enabled": "maybe"}}, ["ml.enabled", "maybe"]),
])
def test_errors_name_key_value_and_allowed(data: dict[str, object], words: list[str]) -> None:
    with pytest.raises(ValidationError) as info:
        QualitySettings.model_validate(data)
    text = str(info.value)
    for word in words:
        assert word in text


def test_gateway_config_validates_the_quality_section() -> None:
    from edge.config import ConfigError, parse_config

    base = '[gateway]\nid = "g"\n[[sources]]\nname = "p"\ntype = "sds011"\nport = "/dev/x"\n'
    config = parse_config(base + "[quality]\nenabled = true\n")
    assert config.settings(QualitySettings) is not None
    with pytest.raises(ConfigError, match=r"quality\.totally_bogus: unknown key"):
        parse_config(base + "[quality]\ntotally_bogus = 1\n")


def test_count_quantities_share_count_defaults() -> None:
    from edge.quality.settings import COUNT_DEFAULTS

    th = QualitySettings().thresholds("car")
    assert th.flat_line_min_level == 0.0 and th.fail_min == 0
    assert th.spike_suspect == COUNT_DEFAULTS["spike_suspect"]


def test_zero_traffic_at_night_is_not_a_stuck_counter() -> None:
    from edge.model import QC_PASS
    from edge.quality.stage import QualityStage

    from .conftest import T0, make_obs

    stage = QualityStage(QualitySettings.model_validate({"ml": {"enabled": False}}))
    counts = [0.0] * 200
    batch = [make_obs("telraam", "bike", c, T0 + i * 900_000) for i, c in enumerate(counts)]
    stage.process(batch)
    assert {o.quality.tests["flat_line"] for o in batch if o.quality} == {QC_PASS}
