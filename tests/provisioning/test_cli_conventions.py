"""CLI conventions of `duet-edge provision` (docs/provisioning.md, "Output and exit codes").

Errors are one ``✗`` line on stderr with a documented exit code; ``--json`` where scripts
parse; nothing copyable (ids, serials, paths, commands) is cut at 80 columns; ``--help`` is
plain text that keeps ``[brackets]``; a slow ``register`` shows progress on stderr.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner, Result

from edge.cli import app as gateway_app
from edge.console import LateProgress, rewrap_help
from provisioning.ca import CertificateAuthority
from provisioning.cli import app
from provisioning.identity import create_identity, load_csr
from tests.plugins.tls_broker import free_port

NARROW = {"COLUMNS": "80"}


def invoke(*args: object, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args], env=env or NARROW)


def one_error_line(result: Result, code: int = 1) -> str:
    assert result.exit_code == code, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("✗ "), result.stderr
    return lines[0]


@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    ca = CertificateAuthority.create(tmp_path / "ca", name="Test CA")
    for gid in ("gw-gent-0001", "gw-gent-0002"):
        ca.sign_csr(load_csr(create_identity(tmp_path / gid, gid).csr))
    return tmp_path / "ca"


def test_every_refusal_is_one_line_on_stderr(tmp_path: Path, ca_dir: Path) -> None:
    cases = [
        (("ca", "create", "--ca-dir", ca_dir), "already holds a CA"),
        (("ca", "sign", tmp_path / "nothere.csr", "--ca-dir", ca_dir),
         "cannot use " + str(tmp_path / "nothere.csr")),
        (("ca", "revoke", "gw-unknown", "--ca-dir", ca_dir), "no valid certificate"),
        (("ca", "list", "--ca-dir", tmp_path / "nope"), "not a CA directory"),
        (("init", "--broker-host", "x", "--gateway-id", "bad/id", "--config",
          tmp_path / "g.toml"), "gateway id 'bad/id' is not allowed"),
        (("register", "--config", tmp_path / "missing.toml"), "cannot read the file"),
        (("bundle", "verify", tmp_path / "b.json", "--trust", tmp_path / "t.pem"),
         "No such file"),
        (("expiry", tmp_path / "none.crt"), "cannot use"),
        (("label", "--out", tmp_path / "x.jpg", "--gateway-id", "gw-1"), ".png or .pdf"),
        (("inventory", "--format", "xml"), "--format must be csv or json"),
    ]
    for args, needle in cases:
        assert needle in one_error_line(invoke(*args)), args


def test_unreachable_twin_exits_4(tmp_path: Path) -> None:
    config = tmp_path / "gw.toml"
    config.write_text(f'[gateway]\nid = "gw-x"\ndata_dir = "{tmp_path}"\n\n[[sources]]\n'
                      'name = "pm"\ntype = "sds011"\nport = "/dev/ttyUSB0"\n\n'
                      f'[uplinks.sensorthings_http]\nbase_url = "http://127.0.0.1:{free_port()}/v1.1"\n'
                      "connect_timeout_s = 1\n")
    for extra in ((), ("--dry-run",)):
        line = one_error_line(invoke("register", "--config", config, *extra), code=4)
        assert "did not answer or refused" in line and "run register again" in line


def test_ca_list_shows_the_full_serial_that_revoke_takes(ca_dir: Path) -> None:
    listed = json.loads(invoke("ca", "list", "--ca-dir", ca_dir, "--json").stdout)
    serials = {row["common_name"]: row["serial"] for row in listed}
    assert all(re.fullmatch(r"[0-9a-f]{30,40}", s) for s in serials.values())
    assert {row["state"] for row in listed} == {"valid"}
    text = invoke("ca", "list", "--ca-dir", ca_dir).stdout
    line = next(line for line in text.splitlines() if "gw-gent-0001" in line)
    shown = line.split("serial ")[1].strip()  # what a technician copies from the terminal
    assert shown == serials["gw-gent-0001"] and "…" not in text
    revoked = invoke("ca", "revoke", shown, "--ca-dir", ca_dir)
    assert revoked.exit_code == 0, revoked.output
    assert f"revoked gw-gent-0001 serial {shown}" in revoked.stdout
    # the shortened form other outputs use (inventory CSV: 8 digits and an ellipsis)
    short = serials["gw-gent-0002"][:8] + "…"
    assert invoke("ca", "revoke", short, "--ca-dir", ca_dir).exit_code == 0
    assert "too short" not in one_error_line(
        invoke("ca", "revoke", serials["gw-gent-0002"][:7], "--ca-dir", ca_dir))
    states = {r["common_name"]: r["state"]
              for r in json.loads(invoke("ca", "list", "--ca-dir", ca_dir, "--json").stdout)}
    assert states == {"gw-gent-0001": "revoked", "gw-gent-0002": "revoked"}


def test_nothing_copyable_is_cut_at_80_columns(tmp_path: Path) -> None:
    ident = tmp_path / "a-rather-long-directory-name" / "etc" / "duet-edge" / "identity"
    config = tmp_path / "a-rather-long-directory-name" / "etc" / "duet-edge" / "gateway.toml"
    port = "/dev/serial/by-id/usb-1a86_USB_Serial-if00-port0"
    result = invoke("init", "--broker-host", "mqtt.gent.example", "--gateway-id",
                    "gw-gent-0001", "--identity-dir", ident, "--config", config,
                    "--source", f"pm=sds011:{port}")
    assert result.exit_code == 0, result.output
    assert f"duet-edge provision ca sign {ident / 'gateway.csr'} --ca-dir" in result.stdout
    report = invoke("doctor", "--config", config, "--timeout", "1").stdout
    assert f"serial port {port} (pm)" in report
    assert "ls -l /dev/serial/by-id/" in report
    for output in (result.stdout, report):
        assert "…" not in output


def test_help_is_plain_whole_and_keeps_brackets() -> None:
    for runner_app, prefix in ((app, []), (gateway_app, ["provision"])):
        result = CliRunner().invoke(runner_app, [*prefix, "init", "--help"], env=NARROW)
        assert result.exit_code == 0
        text = result.stdout
        assert "NAME=TYPE[:PORT]" in text
        assert "/etc/duet-edge/gateway.toml]" in text  # whole, not "/etc/duet-\nedge/…"
        assert "╭" not in text and "…" not in text
        assert max(len(line) for line in text.splitlines()) <= 80
    top = CliRunner().invoke(app, ["--help"], env=NARROW).stdout
    words = " ".join(top.split())
    assert "Create Thing, Location, Sensors, ObservedProperties, Datastreams at the twin." in words
    assert "..." not in top.split("Commands:")[1]  # no first sentence cut short


def test_rewrap_never_splits_a_word() -> None:
    line = "  --config <path>   The config.  [default: /etc/duet-edge/a-very-long-file-name.toml]"
    wrapped = rewrap_help(line, 40)
    assert "/etc/duet-edge/a-very-long-file-name.toml]" in wrapped.split()
    assert all(row.startswith(" " * 20) for row in wrapped.splitlines()[1:])


def test_progress_appears_only_when_register_is_slow() -> None:
    ticks = iter(range(100))
    buffer = io.StringIO()
    terminal = Console(file=buffer, force_terminal=True, width=80)
    with LateProgress("registering datastreams", 5, after_s=2, clock=lambda: next(ticks),
                      console=terminal) as slow:
        for _ in range(5):
            slow.advance()
    assert slow.shown and "registering datastreams" in buffer.getvalue()

    buffer = io.StringIO()
    quick = LateProgress("registering datastreams", 5, after_s=2, clock=lambda: 0.0,
                         console=Console(file=buffer, force_terminal=True, width=80))
    with quick:
        for _ in range(5):
            quick.advance()
    assert not quick.shown and buffer.getvalue() == ""
