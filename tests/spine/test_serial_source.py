"""The generic serial source: frames to observations, subsampling and averaging."""

from __future__ import annotations

from edge.codec import Frame, Reading
from edge.config import SourceSettings
from edge.seams import SourceContext, SourceHealth
from edge.sources.serial import SerialSource


def frame(pm: float) -> Frame:
    return Frame("data", (Reading("pm2_5", pm), Reading("pm10", pm * 2)))


def ctx_at(clock: list[int]) -> SourceContext:
    return SourceContext("gw", lambda _o: None, SourceHealth("s"), clock_ms=lambda: clock[0])


def source(**kw: object) -> SerialSource:
    return SerialSource(SourceSettings(name="s", type="sds011", port="/dev/null", **kw), "gw")  # type: ignore[arg-type]


def test_frames_read_together_are_all_kept_at_the_sensor_rate() -> None:
    clock = [1_000_000]
    obs = source()._observations(ctx_at(clock), [frame(1), frame(2), frame(3)])
    assert [o.result for o in obs] == [1, 2, 2, 4, 3, 6]


def test_slower_interval_subsamples_by_time() -> None:
    clock = [1_000_000]
    src = source(interval_s=10)
    ctx = ctx_at(clock)
    kept = []
    for i in range(30):
        kept += src._observations(ctx, [frame(i)])
        clock[0] += 1000
    assert [o.result for o in kept if o.stream.quantity_code == "pm2_5"] == [0, 10, 20]


def test_average_gives_interval_observations() -> None:
    clock = [1_000_000]
    src = source(interval_s=10, average=True)
    ctx = ctx_at(clock)
    out = []
    for i in range(25):
        out += src._observations(ctx, [frame(float(i))])
        clock[0] += 1000
    pm = [o for o in out if o.stream.quantity_code == "pm2_5"]
    assert [o.result for o in pm] == [4.5, 14.5]
    assert all(o.phenomenon_end_ms - o.phenomenon_ms == 10_000 for o in pm)  # type: ignore[operator]


def test_warm_up_frames_are_skipped_not_zero() -> None:
    clock = [1]
    ctx = ctx_at(clock)
    assert source()._observations(ctx, [Frame("data", (), skip_reason="warm-up")]) == []
    assert ctx.health.frames_skipped == 1
