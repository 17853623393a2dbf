"""Reading co-location CSVs and aligning them in time, and clear errors for bad files."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calibration.io import DataError, TableSpec, align, read_aligned, read_table, write_aligned


def _utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_reference_in_local_time_hour_ending_aligns_with_utc_sensor(tmp_path: Path) -> None:
    # Sensor: 10-minute values in UTC, hour-beginning, value = UTC hour.
    rows = ["timestamp,pm"]
    for h in range(0, 6):
        for m in range(0, 60, 10):
            rows.append(f"2026-01-15T{h:02d}:{m:02d}:00Z,{h}")
    sensor = write(tmp_path / "sensor.csv", "\n".join(rows))
    # Reference: Brussels local time (UTC+1 in January), hour-ending, decimal comma, ';'.
    # The value labelled 02:00 local covers 00:00–01:00 UTC; it equals 10 + that UTC hour.
    ref_rows = ["Datum;Uur;PM25"]
    for h in range(0, 6):
        local_end = h + 2
        ref_rows.append(f"15-01-2026;{local_end:02d}:00;{10 + h},5")
    reference = write(tmp_path / "ref.csv", "\n".join(ref_rows))
    s_spec = TableSpec(sensor, {"signal": "pm"}, ("timestamp",))
    r_spec = TableSpec(reference, {"reference": "PM25"}, ("Datum", "Uur"), "%d-%m-%Y %H:%M",
                       "Europe/Brussels", "end")
    aligned = align(s_spec, r_spec, 3600)
    assert len(aligned) == 6
    assert aligned.start_s[0] == _utc("2026-01-15T00:00:00")
    np.testing.assert_allclose(aligned.values["reference"] - aligned.values["signal"], 10.5)


def test_dst_transition_in_reference_zone(tmp_path: Path) -> None:
    # 2026-03-29 Brussels jumps 02:00 → 03:00 local. Hour-ending labels 01:00, 03:00, 04:00 local
    # are the UTC hours 23:00, 00:00, 01:00 (the 02:00 label does not exist).
    ref = write(tmp_path / "ref.csv", "t,v\n2026-03-29 01:00,1\n2026-03-29 03:00,2\n2026-03-29 04:00,3\n")
    table = read_table(TableSpec(ref, {"reference": "v"}, ("t",), "%Y-%m-%d %H:%M",
                                 "Europe/Brussels", "end"))
    starts = table.start_s - 3600
    assert list(starts) == [_utc("2026-03-28T23:00"), _utc("2026-03-29T00:00"),
                            _utc("2026-03-29T01:00")]


def test_wrong_separator_is_explained(tmp_path: Path) -> None:
    f = write(tmp_path / "s.csv", "time;pm\n2026-01-01T00:00Z;1\n")
    with pytest.raises(DataError, match=r"not found with separator ','.*try separator ';'"):
        read_table(TableSpec(f, {"signal": "pm"}, ("time",), sep=","))


def test_decimal_comma_detected_or_explained(tmp_path: Path) -> None:
    f = write(tmp_path / "s.csv", "time;pm\n2026-01-01T00:00Z;1,5\n2026-01-01T01:00Z;2,25\n")
    table = read_table(TableSpec(f, {"signal": "pm"}, ("time",)))
    assert list(table.values["signal"]) == [1.5, 2.25]
    with pytest.raises(DataError, match=r"row 2, column 'pm': '1,5' is not a number \(decimal comma"):
        read_table(TableSpec(f, {"signal": "pm"}, ("time",), decimal="."))


def test_missing_columns_are_named(tmp_path: Path) -> None:
    f = write(tmp_path / "s.csv", "time,pm10\n2026-01-01T00:00Z,1\n")
    with pytest.raises(DataError, match=r"column\(s\) 'pm25' not found.*header has: 'time', 'pm10'"):
        read_table(TableSpec(f, {"signal": "pm25"}, ("time",)))


def test_bad_timestamp_names_row_and_format(tmp_path: Path) -> None:
    f = write(tmp_path / "s.csv", "time,pm\n2026-01-01T00:00Z,1\n01/02/2026 10:00,2\n")
    with pytest.raises(DataError, match=r"row 3: timestamp '01/02/2026 10:00' does not match 'ISO"):
        read_table(TableSpec(f, {"signal": "pm"}, ("time",)))


def test_no_overlap_in_time(tmp_path: Path) -> None:
    s = write(tmp_path / "s.csv", "time,pm\n2026-01-01T00:00Z,1\n2026-01-01T01:00Z,2\n")
    r = write(tmp_path / "r.csv", "time,ref\n2026-02-01T00:00Z,1\n")
    with pytest.raises(DataError, match=r"no overlap in time: sensor data cover 2026-01-01 00:00"):
        align(TableSpec(s, {"signal": "pm"}), TableSpec(r, {"reference": "ref"}, convention="begin"))


def test_missing_markers_gaps_and_flags_are_dropped(tmp_path: Path) -> None:
    s = write(tmp_path / "s.csv", "time;pm\n2026-01-01T00:00Z;-200\n2026-01-01T01:00Z;2\n"
                                  "2026-01-01T02:00Z;3\n2026-01-01T03:00Z;4\n;;;;\n")
    r = write(tmp_path / "r.csv", "time;ref;flag\n2026-01-01T00:00Z;1;V\n2026-01-01T01:00Z;-200,0;V\n"
                                  "2026-01-01T02:00Z;3;V\n2026-01-01T03:00Z;4;I\n")
    na = ("", "-200")
    aligned = align(TableSpec(s, {"signal": "pm"}, na_values=na),
                    TableSpec(r, {"reference": "ref"}, convention="begin", na_values=na,
                              flag_column="flag", flag_ok=("V",)))
    assert list(aligned.values["signal"]) == [3.0]
    assert any("flagged rows dropped" in n for n in aligned.notes)


def test_unknown_time_zone(tmp_path: Path) -> None:
    f = write(tmp_path / "s.csv", "time,pm\n2026-01-01 00:00,1\n")
    with pytest.raises(DataError, match="unknown time zone 'Europe/Gent'"):
        read_table(TableSpec(f, {"signal": "pm"}, tz="Europe/Gent"))


def test_aligned_csv_round_trip(tmp_path: Path) -> None:
    s = write(tmp_path / "s.csv", "time,pm\n2026-01-01T00:00Z,1.25\n2026-01-01T01:00Z,2\n")
    r = write(tmp_path / "r.csv", "time,ref\n2026-01-01T01:00Z,1\n2026-01-01T02:00Z,2\n")
    aligned = align(TableSpec(s, {"signal": "pm"}),
                    TableSpec(r, {"reference": "ref"}, convention="end"))  # hour-ending
    write_aligned(aligned, tmp_path / "a.csv")
    back = read_aligned(tmp_path / "a.csv", ["signal", "reference"])
    np.testing.assert_array_equal(back.start_s, aligned.start_s)
    assert list(back.values["signal"]) == [1.25, 2.0]

_cells = st.one_of(st.text(alphabet="0123456789-,.;:eE TZ/\"", max_size=12),
                   st.sampled_from(["-200", "-999", "", "NaN", "1,5", "2026-01-01T00:00Z"]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.lists(_cells, min_size=0, max_size=4), max_size=12),
       sep=st.sampled_from([",", ";", None]))
def test_any_csv_gives_a_table_or_a_data_error(tmp_path: Path, rows: list[list[str]],
                                               sep: str | None) -> None:
    """Bad input never crashes the reader: it parses or raises DataError (one-line message)."""
    from calibration.io import detect_interval

    body = "\n".join((sep or ",").join(r) for r in rows)
    f = write(tmp_path / "h.csv", "time,pm,rh\n" + body)
    try:
        table = read_table(TableSpec(f, {"signal": "pm", "rh": "rh"}, sep=sep,
                                     quantities={"rh": "humidity"}))
    except DataError as exc:
        assert "\n" not in str(exc)
        return
    assert table.start_s.size == table.values["signal"].size
    assert detect_interval(table.start_s) >= 0


def test_interval_of_gappy_hourly_data_is_one_hour() -> None:
    """An hourly export with most hours missing (70 % here, at random) has a median spacing of
    several hours; the interval is still detected as one hour, so the data are neither averaged
    into multi-hour bins nor refused for a --period 3600."""
    from calibration.io import detect_interval

    rng = np.random.default_rng(7)
    hours = np.flatnonzero(rng.random(24 * 365) < 0.3)
    start_s = 1.6e9 + hours * 3600.0
    assert np.median(np.diff(start_s)) > 3600  # the old median rule said 2-3 hours
    assert detect_interval(start_s) == 3600


@pytest.mark.parametrize(("step_s", "jitter_s", "expected"),
                         [(600, 20, 600), (3600, 0, 3600), (86400, 0, 86400), (60, 3, 60)])
def test_interval_of_regular_data_with_clock_jitter(step_s: int, jitter_s: int,
                                                     expected: int) -> None:
    from calibration.io import detect_interval

    rng = np.random.default_rng(1)
    start_s = 1.6e9 + np.arange(500) * step_s + rng.uniform(-jitter_s, jitter_s, 500).round()
    assert detect_interval(start_s) == expected
