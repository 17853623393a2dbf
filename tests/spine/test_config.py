"""Configuration: every bad file gets one clear message per problem, naming key, value and fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from edge.cli import app
from edge.config import ConfigError, load_config, parse_config

GOOD = """
[gateway]
id = "gw-1"

[[sources]]
name = "pm"
type = "sds011"
port = "/dev/ttyUSB0"
"""


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("[gateway\nid=1", ["not valid TOML"]),
        (
            '[[sources]]\nname="pm"\ntype="sds011"\nport="/dev/x"',
            ["gateway: required key is missing"],
        ),
        ('[gateway]\nid="gw"', ["sources: required key is missing"]),
        (
            GOOD.replace('id = "gw-1"', 'id = "gw 1"'),
            ["gateway.id = 'gw 1': must be 1-64 characters: letters, digits"],
        ),
        (
            GOOD.replace('type = "sds011"', 'type = "sds012"'),
            [
                "sources[0] (name = 'pm').type = 'sds012': unknown sensor type; supported: ",
                "sds011",
            ],
        ),
        (
            GOOD.replace('port = "/dev/ttyUSB0"', ""),
            [
                "sources[0] (name = 'pm'): a serial sensor needs 'port' (e.g. /dev/ttyUSB0) or 'usb_serial'"
            ],
        ),
        (
            GOOD + "interval_s = 0\n",
            ["sources[0] (name = 'pm').interval_s = 0: Input should be greater than 0"],
        ),
        (
            GOOD + '\n[[sources]]\nname = "pm"\ntype = "pms5003"\nport = "/dev/x"\n',
            ["two sources are named 'pm'; names must be unique"],
        ),
        (
            GOOD + "\n[buffer]\nmax_bytes = 10\n",
            ["buffer.max_bytes = 10: Input should be greater than or equal to 1048576"],
        ),
        (
            GOOD + '\n[buffer]\neviction = "random"\n',
            ["buffer.eviction = 'random': Input should be 'oldest' or 'newest'"],
        ),
        (
            GOOD + "\n[buffer]\nmax_bytess = 10\n",
            ["buffer.max_bytess: unknown key (check the spelling"],
        ),
        (
            GOOD + "\n[uplinks.mqtt]\nport = 70000\n",
            ["uplinks.mqtt.port = 70000: Input should be less than 65536"],
        ),
        (
            GOOD + '\n[uplinks.mqtt]\nmode = "json"\n',
            ["uplinks.mqtt.mode = 'json': Input should be 'compact' or 'sensorthings'"],
        ),
        (
            GOOD.replace(
                'type = "sds011"\nport = "/dev/ttyUSB0"',
                'type = "ops243"\nport = "/dev/x"\noptions = { interval_s = -5 }',
            ),
            ["sources[0] (name = 'pm'): options.interval_s: Input should be greater than 0"],
        ),
        (GOOD + '\n[log]\nlevel = "LOUD"\n', ["log.level = 'LOUD': Input should be"]),
    ],
)
def test_bad_files_name_each_problem(toml: str, expected: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(toml)
    text = "\n".join(info.value.problems)
    for fragment in expected:
        assert fragment in text


def test_every_problem_is_reported_at_once() -> None:
    bad = GOOD.replace('id = "gw-1"', 'id = ""') + "\n[buffer]\ncommit_rows = 0\nfoo = 1\n"
    with pytest.raises(ConfigError) as info:
        parse_config(bad)
    assert len(info.value.problems) == 3


def test_the_example_config_is_valid() -> None:
    cfg = load_config(Path("edge/example-config.toml"))
    assert {s.type for s in cfg.sources} >= {
        "sds011",
        "pms5003",
        "sps30",
        "mhz19b",
        "scd30",
        "ops243",
        "ble",
    }


def test_config_check_command_exit_codes(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(GOOD)
    bad = tmp_path / "bad.toml"
    bad.write_text(GOOD.replace("sds011", "nope"))
    runner = CliRunner()
    ok = runner.invoke(app, ["config", "check", str(good)])
    assert ok.exit_code == 0 and "gw-1" in ok.output
    ko = runner.invoke(app, ["config", "check", str(bad)])
    assert ko.exit_code == 1 and "unknown sensor type" in ko.output
    missing = runner.invoke(app, ["config", "check", str(tmp_path / "missing.toml")])
    assert missing.exit_code == 1 and "cannot read the file" in missing.output


def test_run_refuses_a_bad_config_without_starting(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(GOOD.replace("sds011", "nope"))
    result = CliRunner().invoke(app, ["run", str(bad)])
    assert result.exit_code == 2
    assert not (tmp_path / "outbox.db").exists()


def test_outbox_commands_read_a_live_outbox(tmp_path: Path) -> None:
    from edge.config import BufferSettings
    from edge.model import Datastream, Delivery, Observation, Provenance
    from edge.outbox import Outbox

    cfg = tmp_path / "gw.toml"
    cfg.write_text(
        GOOD.replace('id = "gw-1"', f'id = "gw-1"\ndata_dir = "{tmp_path}"')
        + "\n[uplinks.mqtt]\nport = 1883\n"
    )
    box = Outbox(tmp_path / "outbox.db", BufferSettings(), "gw-1", uplinks=["mqtt"])
    box.append(
        [
            Observation(Datastream("gw-1", "pm", "pm2_5"), float(i), 1_000 + i, Provenance("X"))
            for i in range(10)
        ]
    )
    box.commit()
    batch = box.next_batch("mqtt", 4)
    box.settle(
        "mqtt", Delivery(confirmed=batch.sequences[:3], rejected={batch.sequences[3]: "400: bad"})
    )
    box.close()
    runner = CliRunner()
    stats = runner.invoke(app, ["outbox", "stats", str(cfg)])
    assert stats.exit_code == 0, stats.output
    assert "unsent observations" in stats.output and "│ 6 " in stats.output.replace("┃", "│")
    dead = runner.invoke(app, ["outbox", "dead-letters", str(cfg)])
    assert "400: bad" in dead.output
    requeued = runner.invoke(app, ["outbox", "requeue", str(cfg)])
    assert "requeued 1" in requeued.output


def test_unknown_serial_option_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(GOOD + "options = { warmup = 5 }\n")
    assert "options.warmup: Extra inputs are not permitted" in "\n".join(info.value.problems)
