"""Traffic aggregation: Telraam fields from radar object detections."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from edge.quantities import QUANTITIES
from edge.sensors.ops243 import codec as ops243
from edge.sensors.ops243.traffic import (
    Detection,
    TrafficAggregator,
    TrafficSettings,
    aggregate,
    classify,
    detection_from_frame,
    merge_reports,
    percentile,
    speed_histogram,
)

S = TrafficSettings()


def test_classes_are_speed_bands_and_heavy_needs_length() -> None:
    assert classify(Detection(0, 4.0, "lft"), S) == "pedestrian"
    assert classify(Detection(0, 18.0, "lft"), S) == "bike"
    assert classify(Detection(0, 50.0, "lft"), S) == "car"
    assert classify(Detection(0, 50.0, "lft", length_m=12.0), S) == "heavy"
    assert classify(Detection(0, 50.0, "lft", length_m=4.5), S) == "car"


def test_v85_and_histogram() -> None:
    assert percentile([float(v) for v in range(1, 101)], 85) == pytest.approx(85.15)
    assert percentile([42.0], 85) == 42.0
    assert percentile([], 85) is None
    hist = speed_histogram([5, 15, 15, 119.9, 120, 200], 13)
    assert len(hist) == 13 and sum(hist) == pytest.approx(100)
    assert hist[0] == pytest.approx(100 / 6) and hist[1] == pytest.approx(200 / 6)
    assert hist[11] == pytest.approx(100 / 6) and hist[12] == pytest.approx(200 / 6)
    assert speed_histogram([], 13) == (0.0,) * 13


def test_repeated_object_reports_merge_into_one() -> None:
    reports = [Detection(10.0, 40, "lft"), Detection(10.3, 44, "lft"), Detection(10.5, 43, "rgt"),
               Detection(13.0, 50, "lft")]
    merged = merge_reports(reports, gap_s=1.0)
    assert [(d.side, d.speed_kmh) for d in merged] == [("lft", 44), ("rgt", 43), ("lft", 50)]


def test_aggregate_counts_per_class_and_side() -> None:
    dets = [
        Detection(1, 4, "lft"), Detection(2, 5, "rgt"),  # pedestrians
        Detection(3, 20, "rgt"),  # bike
        Detection(5, 45, "lft"), Detection(8, 55, "rgt"), Detection(11, 130, "rgt"),  # cars
        Detection(14, 60, "lft", length_m=11.0),  # heavy (length known)
        Detection(20, 0.5, "lft"),  # clutter: below min_speed_kmh
        Detection(900, 50, "lft"),  # next interval
    ]
    iv = aggregate(dets, start=0.0, counting_s=450.0)
    c = iv.counts
    assert (c["pedestrian"], c["pedestrian_lft"], c["pedestrian_rgt"]) == (2, 1, 1)
    assert (c["bike"], c["bike_rgt"]) == (1, 1)
    assert (c["car"], c["car_lft"], c["car_rgt"]) == (3, 1, 2)
    assert (c["heavy"], c["heavy_lft"]) == (1, 1)
    assert c["traffic_count"] == 7
    assert iv.uptime == 0.5
    assert iv.car_speed_hist_0to120plus[4] == pytest.approx(100 / 3)
    assert iv.car_speed_hist_0to120plus[12] == pytest.approx(100 / 3)
    assert iv.car_speed_hist_0to70plus[7] == pytest.approx(100 / 3)
    assert iv.v85 == pytest.approx(percentile([45, 55, 130], 85), abs=0.01)
    row = iv.telraam()
    assert row["date"] == "1970-01-01T00:00:00Z" and row["interval"] == "quarterly"
    for key in ("car_lft", "car_rgt", "heavy", "v85", "uptime", "car_speed_hist_0to120plus"):
        assert key in row
    for r in iv.readings():
        assert r.quantity in QUANTITIES, r.quantity


def test_detections_from_ops243_frames() -> None:
    dec = ops243.Ops243Decoder("kmh")
    frames = dec.feed(ops243.object_report(48.0, "outbound", 5.0)
                      + ops243.object_report(30.0, "inbound") + b"12.0\r\n")
    dets = [detection_from_frame(f, 1.0, inbound_side="rgt") for f in frames]
    assert dets[0] == Detection(1.0, 48.0, "lft")
    assert dets[1] == Detection(1.0, 30.0, "rgt")
    assert dets[2] is None  # a raw speed sample is not an object


def test_aggregator_closes_aligned_intervals_with_uptime() -> None:
    agg = TrafficAggregator(TrafficSettings(interval_s=60))
    agg.counted(30.0, 150.0)  # connected from 0:30 to 2:30
    for t in (31.0, 45.0, 61.0, 125.0):
        agg.add(Detection(t, 50.0, "lft"))
    assert agg.close_until(59.0) == []
    out = agg.close_until(180.0)
    assert [iv.start for iv in out] == [0.0, 60.0, 120.0]
    assert [iv.counts["car"] for iv in out] == [2, 1, 1]
    assert [iv.uptime for iv in out] == [0.5, 1.0, 0.5]


def test_settings_errors_name_the_key() -> None:
    with pytest.raises(ValidationError, match="inbound_side"):
        TrafficSettings(inbound_side="left")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="bike_max_kmh"):
        TrafficSettings(pedestrian_max_kmh=30, bike_max_kmh=20)
    with pytest.raises(ValidationError, match="speed_limit"):
        TrafficSettings(speed_limit=50)  # type: ignore[call-arg]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 899.99), st.floats(0, 250), st.sampled_from(["lft", "rgt"]),
                          st.none() | st.floats(0, 20)), max_size=60))
def test_aggregate_invariants(raw: list[tuple[float, float, str, float | None]]) -> None:
    dets = [Detection(t, v, side, length) for t, v, side, length in raw]  # type: ignore[arg-type]
    iv = aggregate(dets, start=0.0)
    c = iv.counts
    assert sum(c[k] for k in ("pedestrian", "bike", "car", "heavy")) == c["traffic_count"]
    for k in ("pedestrian", "bike", "car", "heavy"):
        assert c[f"{k}_lft"] + c[f"{k}_rgt"] == c[k]
    total = sum(iv.car_speed_hist_0to120plus)
    assert total == pytest.approx(100.0) if c["car"] else total == 0
    assert sum(iv.car_speed_hist_0to70plus) == pytest.approx(total)
    if c["car"]:
        assert iv.v85 is not None and S.bike_max_kmh <= iv.v85 <= 250.01
    else:
        assert iv.v85 is None
