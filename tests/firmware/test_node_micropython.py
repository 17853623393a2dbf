"""The firmware's node application under real MicroPython, talking to the gateway's session.

Cross-side: frames the firmware encodes under MicroPython are decoded by the gateway code
(CPython), and the gateway's acks, time and config frames are decoded by the firmware.
"""

from __future__ import annotations

import pytest

from edge.node.session import AcceptedBatch, NodeSession
from edge.node.store import HwmStore
from edge.sensors.ops243.traffic import Detection, TrafficSettings, aggregate
from firmware import nodeproto as P
from tests.firmware.conftest import EmulatedNode

EPOCH = 1_764_072_000_000


class Gateway:
    """The gateway's protocol session with a fake clock and an in-memory mark store."""

    def __init__(self, hwm: HwmStore | None = None) -> None:
        self.now = EPOCH
        self.hwm = hwm or HwmStore(":memory:")
        self.session = NodeSession("gw-test", "nodes", self.hwm, lambda: self.now)
        self.batches: list[AcceptedBatch] = []
        self.logs: list[dict[str, object]] = []
        self.configs: list[dict[str, object]] = []

    def receive(self, data: bytes, commit: bool = True) -> bytes:
        result = self.session.feed(data)
        self.batches.extend(result.batches)
        self.logs.extend(result.logs)
        self.configs.extend(result.configs)
        out = b"".join(result.replies)
        if commit and result.batches:
            last = result.batches[-1]
            out += self.session.committed(last.node_id, last.seq)
        return out


def converse(node: EmulatedNode, gw: Gateway, ms: int, chunk_ms: int = 1000,
             commit: bool = True) -> None:
    """Let node and gateway exchange frames for ``ms`` of node time."""
    reply = b""
    for _ in range(ms // chunk_ms):
        sent = node.run(chunk_ms, reply)
        gw.now += chunk_ms
        reply = gw.receive(sent, commit)


def test_air_node_end_to_end_with_gateway_session(node: EmulatedNode) -> None:
    node.setup(kind="air", cfg={"interval_s": 60, "pm_on_s": 60})
    gw = Gateway()
    converse(node, gw, 125_000)
    assert gw.session.node is not None
    assert gw.session.node.node_id == "240ac4123456"
    assert gw.session.node.firmware == "1.0.0"
    assert [s[0] for s in gw.session.node.sensors] == ["sds011", "bme280"]
    assert [b.seq for b in gw.batches] == [1, 2]
    values = {o.stream.quantity_code: o.result for o in gw.batches[0].observations}
    assert values["pm2_5"] == pytest.approx(12.5)
    assert values["pm10"] == pytest.approx(20.0)
    assert values["temperature"] == pytest.approx(21.5, abs=0.02)
    assert values["humidity"] == pytest.approx(48.0, abs=0.1)
    assert values["pressure"] == pytest.approx(101325, abs=2)
    obs = gw.batches[1].observations[0]
    assert obs.provenance.node_id == "240ac4123456"
    assert obs.provenance.firmware_version == "1.0.0"
    assert obs.provenance.sensor_model == "Nova Fitness SDS011"
    assert obs.stream.sensor_id == "nodes.240ac4123456.sds011"
    assert obs.phenomenon_end_ms is not None
    assert obs.phenomenon_end_ms - obs.phenomenon_ms == 60_000
    # time synced at the hello, so the second interval starts one interval after the first
    assert obs.phenomenon_ms == gw.batches[0].observations[0].phenomenon_ms + 60_000
    status = node.status()
    assert status["ring"] == []  # everything acknowledged
    assert status["synced"] and status["connected"]
    assert status["wdt_feeds"] > 1000  # fed on every step
    assert gw.hwm.get("240ac4123456") == 2


def test_unacked_batches_resent_after_gateway_restart_without_duplicates(node: EmulatedNode) -> None:
    node.setup(kind="air", cfg={"interval_s": 30, "pm_on_s": 30, "ack_timeout_s": 5})
    store = HwmStore(":memory:")
    gw = Gateway(store)
    converse(node, gw, 65_000)  # two batches, committed and acked
    assert [b.seq for b in gw.batches] == [1, 2]
    # the gateway goes away: the node keeps measuring, nothing is acked
    for _ in range(3):
        node.run(30_000)
    assert node.status()["ring"] == [3, 4, 5]
    # a new gateway process with the same persisted marks
    gw2 = Gateway(store)
    gw2.session.feed(P.encode_message({"type": "sync"}))  # (gateway side ignores its own type)
    node_bytes = node.run(100, P.encode_message({"type": "sync"}))
    reply = gw2.receive(node_bytes)
    converse_reply = node.run(1000, reply)
    gw2.receive(converse_reply)
    converse(node, gw2, 10_000)
    assert [b.seq for b in gw2.batches] == [3, 4, 5]
    assert node.status()["ring"] == []
    assert store.get("240ac4123456") == 5


def test_lost_acks_cause_resends_that_the_gateway_deduplicates(node: EmulatedNode) -> None:
    node.setup(kind="air", cfg={"interval_s": 20, "pm_on_s": 20, "ack_timeout_s": 3})
    gw = Gateway()
    converse(node, gw, 5_000)
    # batches reach the gateway and are committed, but every ack is lost on the way back
    for _ in range(50):
        sent = node.run(1000)
        gw.now += 1000
        gw.receive(sent)
    status = node.status()
    assert status["stats"]["resends"] >= 2
    accepted = [b.seq for b in gw.batches]
    assert accepted == sorted(set(accepted))  # no batch accepted twice
    assert gw.session.counts["duplicates"] >= 2
    converse(node, gw, 8_000)
    assert node.status()["ring"] == []


def test_pm_duty_cycle_and_watchdog(node: EmulatedNode) -> None:
    node.setup(kind="air", cfg={"interval_s": 60, "pm_on_s": 20, "pm_warmup_s": 5})
    gw = Gateway()
    converse(node, gw, 181_000)
    pm = node.eval("[h.state['pmemu'].sleeps, h.state['pmemu'].wakes, h.state['pmemu'].frames]")
    sleeps, wakes, frames = pm
    assert (sleeps, wakes) == (4, 3)  # asleep from boot, awake 20 s before each interval end
    assert 45 <= frames <= 66  # ~20 frames per interval instead of 181
    assert len(gw.batches) == 3
    assert all(any(o.stream.quantity_code == "pm2_5" for o in b.observations) for b in gw.batches)


def test_config_get_and_set_from_gateway(node: EmulatedNode) -> None:
    node.setup(kind="air", cfg={"interval_s": 60})
    gw = Gateway()
    converse(node, gw, 3_000)
    gw.receive(node.run(1000, NodeSession.config_get()))
    assert gw.configs[-1]["interval_s"] == 60
    gw.receive(node.run(1000, NodeSession.config_set({"interval_s": 30, "calibration_id": "c-7"})))
    assert gw.configs[-1]["interval_s"] == 30
    assert gw.configs[-1]["calibration_id"] == "c-7"
    assert node.eval("h.nodecfg.load()['interval_s']") == 30  # persisted on flash
    gw.receive(node.run(1000, NodeSession.config_set({"interval_s": 1})))
    gw.receive(node.run(1000, NodeSession.config_set({"wifi_password": "x"})))
    assert [log["code"] for log in gw.logs] == ["config", "config"]
    assert "interval_s" in str(gw.logs[0]["text"])
    assert "settable" in str(gw.logs[1]["text"])
    # the new interval is in effect: batches come every 30 s
    converse(node, gw, 95_000)
    assert len(gw.batches) >= 3


def test_ring_is_bounded_and_survives_a_reboot(node: EmulatedNode) -> None:
    node.setup(kind="air", cfg={"interval_s": 10, "pm_on_s": 10, "ring_size": 4,
                                "persist_ring": True})
    gw = Gateway()
    converse(node, gw, 12_000)
    assert [b.seq for b in gw.batches] == [1]
    node.run(60_000)  # gateway away: six more batches, only four fit
    status = node.status()
    assert status["ring"] == [4, 5, 6, 7]
    assert status["stats"]["dropped"] == 2
    node.eval("h.boot()")  # power cycle: RAM gone, flash stays
    status = node.status()
    assert status["ring"] == [4, 5, 6, 7]
    assert status["next_seq"] > 7  # never reuses a sequence number
    converse(node, gw, 5_000)
    assert [b.seq for b in gw.batches] == [1, 4, 5, 6, 7]
    assert gw.session.counts["gap_batches"] == 2  # the two the node had to drop


def test_battery_node_deep_sleeps_between_measurements(node: EmulatedNode) -> None:
    node.setup(kind="air", cfg={"interval_s": 120, "pm_on_s": 20, "battery": True,
                                "persist_ring": True})
    gw = Gateway()
    converse(node, gw, 400_000, chunk_ms=1000)
    status = node.status()
    assert len(status["sleeps"]) >= 2
    assert all(80_000 <= s <= 100_000 for s in status["sleeps"])
    assert status["boots"] == len(status["sleeps"]) + 1
    seqs = [b.seq for b in gw.batches]
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) >= 2  # no numbers skipped
    assert gw.session.counts["gap_batches"] == 0


def test_traffic_node_gives_the_gateways_telraam_fields(node: EmulatedNode) -> None:
    """Same detections → the firmware's interval equals edge.sensors.ops243.traffic.aggregate's."""
    speeds = [32.0, -45.5, 51.0, 28.0, -62.0, 75.5, 49.0, -8.0, 33.0, 41.0, 3.0, -0.5, 125.0,
              20.0, -24.0]
    objects = [(1000 + i * 2000, v) for i, v in enumerate(speeds)]
    objects.insert(3, (objects[2][0] + 400, 55.0))  # the radar repeats one object, faster
    node.setup(kind="traffic", cfg={"interval_s": 60}, objects=objects)
    gw = Gateway()
    converse(node, gw, 62_000)
    assert len(gw.batches) == 1
    got = {o.stream.quantity_code: o.result for o in gw.batches[0].observations}
    detections = [Detection(t / 1000, abs(v), "lft" if v >= 0 else "rgt") for t, v in objects]
    want = {r.quantity: r.value for r in aggregate(detections, 0.0, TrafficSettings(
        interval_s=60)).readings()}
    assert set(got) == set(want)
    for code, value in want.items():
        assert got[code] == pytest.approx(value, abs=0.01), code
    assert got["traffic_count"] == 14  # 16 reports: one merged, one (0.5 km/h) clutter


def test_traffic_node_reads_json_reports(node: EmulatedNode) -> None:
    node.setup(kind="traffic", cfg={"interval_s": 30}, objects=[(500, 40.0), (900, -20.0)],
               json_lines=True)
    gw = Gateway()
    converse(node, gw, 32_000)
    got = {o.stream.quantity_code: o.result for o in gw.batches[0].observations}
    assert (got["car_lft"], got["bike_rgt"]) == (1, 1)


def test_missing_bme280_is_reported_and_the_node_keeps_measuring(node: EmulatedNode) -> None:
    node.setup(kind="air", cfg={"interval_s": 20, "pm_on_s": 20, "pm_warmup_s": 0}, env=None)
    gw = Gateway()
    converse(node, gw, 22_000)
    assert [(log["level"], log["code"]) for log in gw.logs] == [("error", "sensor")]
    assert "bme280" in str(gw.logs[0]["text"])
    assert gw.session.node is not None
    assert [s[0] for s in gw.session.node.sensors] == ["sds011"]
    assert {o.stream.quantity_code for o in gw.batches[0].observations} == {"pm2_5", "pm10"}
