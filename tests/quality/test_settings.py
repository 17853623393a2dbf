"""[quality] settings: per-quantity defaults, key-by-key overrides, informative errors."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from edge.quality.settings import DEFAULT_THRESHOLDS, QualitySettings


def test_defaults_per_quantity() -> None:
    s = QualitySettings()
    assert s.thresholds("pm2_5").fail_max == DEFAULT_THRESHOLDS["pm2_5"]["fail_max"]
    assert s.thresholds("humidity").rate_of_change_max == 0.2
    generic = s.thresholds("voc_index")  # no table entry: generic defaults
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


def test_gateway_config_includes_quality_section() -> None:
    from edge.config import GatewayConfig

    assert GatewayConfig.model_fields["quality"].annotation is not None
    schema = str(GatewayConfig.model_json_schema())
    assert "QualitySettings" in schema
