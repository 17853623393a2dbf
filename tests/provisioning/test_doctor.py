"""`provision doctor` on real broken setups: each problem is named, with its fix."""

from __future__ import annotations

import grp
import http.server
import json
import os
import pwd
import re
import shutil
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisioning.doctor import (
    CheckResult,
    DoctorOptions,
    TlsFiles,
    check_ble,
    check_certificate,
    check_clock,
    check_disk_space,
    check_mqtt_broker,
    check_serial_port,
    read_ntp_synchronized,
    run_doctor,
)
from tests.plugins.tls_broker import TlsBroker, free_port

TECHNICIAN_UID = 4242  # an ordinary user, not root, in no special group
TECHNICIAN_GIDS = {4242}


@pytest.fixture
def locked_port() -> Iterator[str]:
    """A real pseudo-terminal owned root:dialout, mode 0660 — like /dev/ttyUSB0."""
    master, slave = os.openpty()
    name = os.ttyname(slave)
    os.chown(name, 0, grp.getgrnam("dialout").gr_gid)
    os.chmod(name, 0o660)
    try:
        yield name
    finally:
        os.close(slave)
        os.close(master)


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory every user can enter (pytest's tmp_path is root-only 0700)."""
    path = Path(tempfile.mkdtemp(prefix="duet-doctor-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _can(user: str, test: str, path: Path) -> bool:
    """What the kernel says: `test -r/-w PATH` run as ``user`` (runuser, util-linux)."""
    done = subprocess.run(["runuser", "-u", user, "--", "test", test, str(path)],
                          capture_output=True, timeout=10, check=False)
    return done.returncode == 0


def _user(name: str) -> tuple[int, set[int]]:
    entry = pwd.getpwnam(name)
    return entry.pw_uid, set(os.getgrouplist(name, entry.pw_gid))


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="changes owners and creates devices")


@pytest.fixture
def http_server() -> Iterator[str]:
    """A real local HTTP server (its answers carry a Date header)."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_serial_port_without_permission_names_dialout(locked_port: str) -> None:
    result = check_serial_port(locked_port, uid=TECHNICIAN_UID, gids=TECHNICIAN_GIDS)
    assert result.status == "fail"
    assert "may not read/write" in result.detail and "group dialout" in result.detail
    assert "usermod -aG dialout" in result.fix


def test_serial_port_ok_for_dialout_member(locked_port: str) -> None:
    dialout = grp.getgrnam("dialout").gr_gid
    result = check_serial_port(locked_port, uid=TECHNICIAN_UID, gids={4242, dialout})
    assert result.status == "pass", result


def test_missing_serial_port(tmp_path: Path) -> None:
    result = check_serial_port(str(tmp_path / "ttyUSB9"))
    assert result.status == "fail" and "not found" in result.detail
    assert "/dev/serial/by-id" in result.fix


def test_clock_far_off_against_server_date(http_server: str) -> None:
    from provisioning.doctor import http_date

    result = check_clock(
        clock=lambda: time.time() + 3600, ntp_synchronized=None,
        reference_time=lambda: http_date(http_server), reference_name="the twin",
    )
    assert result.status == "fail"
    assert re.search(r"\b(3599|3600|3601) s ahead of the twin", result.detail), result.detail
    assert "timedatectl set-ntp true" in result.fix
    good = check_clock(reference_time=lambda: http_date(http_server), reference_name="twin")
    assert good.status == "pass", good


def test_clock_ntp_state() -> None:
    assert check_clock(ntp_synchronized=False).status == "fail"
    assert check_clock(ntp_synchronized=True).status == "pass"
    assert read_ntp_synchronized(lambda cmd: "no\n") is False
    assert read_ntp_synchronized(lambda cmd: "yes\n") is True
    def broken(cmd: list[str]) -> str:
        raise FileNotFoundError(cmd[0])
    assert read_ntp_synchronized(broken) is None


def test_broker_unreachable() -> None:
    result = check_mqtt_broker("127.0.0.1", free_port(), TlsFiles(), timeout=2)
    assert result.status == "fail" and "cannot connect" in result.detail
    assert "is the broker running" in result.fix


def test_broker_reachable_with_tls_details(tls_broker: TlsBroker) -> None:
    gw = tls_broker.client("gw-doc")
    result = check_mqtt_broker(tls_broker.host, tls_broker.port,
                               TlsFiles(gw.ca_file, gw.cert_file, gw.key_file))
    assert result.status == "pass", result
    assert "TLSv1." in result.detail and "CN=broker.test" in result.detail


def test_broker_refuses_revoked_gateway(tls_broker: TlsBroker) -> None:
    gw = tls_broker.client("gw-doc")
    tls_broker.revoke("gw-doc")
    result = check_mqtt_broker(tls_broker.host, tls_broker.port,
                               TlsFiles(gw.ca_file, gw.cert_file, gw.key_file))
    assert result.status == "fail", result
    assert "revoked" in result.fix


def test_broker_with_untrusted_server_certificate(tls_broker: TlsBroker, tmp_path: Path) -> None:
    from provisioning.ca import CertificateAuthority

    other = CertificateAuthority.create(tmp_path / "other")
    result = check_mqtt_broker(tls_broker.host, tls_broker.port, TlsFiles(ca_file=other.cert_path))
    assert result.status == "fail" and "not trusted" in result.detail


def test_expired_certificate_and_wrong_key(tls_broker: TlsBroker) -> None:
    old = tls_broker.client("gw-old", expired=True)
    result = check_certificate(old.cert_file, old.key_file)
    assert result.status == "fail" and "expired on" in result.detail
    fresh = tls_broker.client("gw-new")
    mixed = check_certificate(fresh.cert_file, old.key_file)
    assert mixed.status == "fail" and "does not belong" in mixed.detail
    assert check_certificate(fresh.cert_file, fresh.key_file).status == "pass"
    soon = check_certificate(fresh.cert_file, fresh.key_file,
                             clock=lambda: time.time() + 350 * 86400)
    assert soon.status == "warn" and "expires in" in soon.detail


def test_disk_space_threshold(tmp_path: Path) -> None:
    assert check_disk_space(tmp_path, min_free_mb=1).status == "pass"
    result = check_disk_space(tmp_path / "not" / "yet", min_free_mb=1e12)
    assert result.status == "fail" and "MB free" in result.detail


def test_ble_blocked_and_missing(tmp_path: Path) -> None:
    missing = check_ble(sys_bluetooth=tmp_path / "none", sys_rfkill=tmp_path / "none")
    assert missing.status == "fail" and "no Bluetooth adapter" in missing.detail
    (tmp_path / "bt" / "hci0").mkdir(parents=True)
    rf = tmp_path / "rfkill" / "rfkill0"
    rf.mkdir(parents=True)
    (rf / "type").write_text("bluetooth\n")
    (rf / "hard").write_text("0\n")
    (rf / "soft").write_text("1\n")
    blocked = check_ble(sys_bluetooth=tmp_path / "bt", sys_rfkill=tmp_path / "rfkill")
    assert blocked.status == "fail" and "rfkill unblock" in blocked.fix
    (rf / "soft").write_text("0\n")
    no_dbus = check_ble(sys_bluetooth=tmp_path / "bt", sys_rfkill=tmp_path / "rfkill",
                        dbus_socket=tmp_path / "no-socket")
    assert no_dbus.status == "fail" and "D-Bus" in no_dbus.detail
    sock = tmp_path / "bus"
    sock.touch()
    ok = check_ble(sys_bluetooth=tmp_path / "bt", sys_rfkill=tmp_path / "rfkill",
                   dbus_socket=sock, uid=0)
    assert ok.status == "pass", ok


def _write_config(path: Path, port: str, broker_port: int, tls: TlsFiles, data_dir: Path) -> Path:
    path.write_text(f"""
[gateway]
id = "gw-doc"
data_dir = "{data_dir}"

[[sources]]
name = "pm"
type = "sds011"
port = "{port}"

[uplinks.mqtt]
host = "127.0.0.1"
port = {broker_port}

[uplinks.mqtt.tls]
ca_file = "{tls.ca_file}"
cert_file = "{tls.cert_file}"
key_file = "{tls.key_file}"
""")
    return path


def _by_prefix(results: list[CheckResult], prefix: str) -> CheckResult:
    [hit] = [r for r in results if r.name.startswith(prefix)]
    return hit


def test_doctor_on_a_broken_setup_names_each_problem(
    tmp_path: Path, locked_port: str, http_server: str, tls_broker: TlsBroker
) -> None:
    gw = tls_broker.client("gw-doc")
    tls = TlsFiles(gw.ca_file, gw.cert_file, gw.key_file)
    dead_port = free_port()
    config = _write_config(tmp_path / "gateway.toml", locked_port, dead_port, tls, tmp_path)
    options = DoctorOptions(
        clock=lambda: time.time() - 7200, uid=TECHNICIAN_UID, gids=set(TECHNICIAN_GIDS),
        ntp_synchronized=lambda: False, timeout_s=2, time_url=http_server,
    )
    results = run_doctor(config, options)
    assert _by_prefix(results, "config").status == "pass"
    port = _by_prefix(results, "serial port")
    assert port.failed and "dialout" in port.fix
    clock = _by_prefix(results, "clock")
    assert clock.failed and "behind" in clock.detail
    broker = _by_prefix(results, "broker")
    assert broker.failed and "cannot connect" in broker.detail
    # The certificate was issued "now", which is in the future for a clock 2 h behind.
    cert = _by_prefix(results, "certificate")
    assert cert.failed and "not valid before" in cert.detail and "clock" in cert.fix


def _give(paths: list[Path], uid: int) -> None:
    for path in paths:
        os.chown(path, uid, -1)


def test_doctor_on_a_good_setup_passes(
    open_dir: Path, locked_port: str, http_server: str, tls_broker: TlsBroker
) -> None:
    gw = tls_broker.client("gw-doc")
    ident = open_dir / "identity"
    ident.mkdir(mode=0o700)
    for src in (gw.ca_file, gw.cert_file, gw.key_file):
        shutil.copy2(src, ident / src.name)
    tls = TlsFiles(ident / gw.ca_file.name, ident / gw.cert_file.name, ident / gw.key_file.name)
    data = open_dir / "data"
    data.mkdir()
    _give([ident, data, *ident.iterdir()], TECHNICIAN_UID)  # what `init --owner` does
    config = _write_config(open_dir / "gateway.toml", locked_port, tls_broker.port, tls, data)
    dialout = grp.getgrnam("dialout").gr_gid
    options = DoctorOptions(uid=TECHNICIAN_UID, gids={dialout}, ntp_synchronized=lambda: True,
                            time_url=http_server)
    results = run_doctor(config, options)
    assert [r for r in results if r.status != "pass"] == []
    assert [r.name.split(" ")[0] for r in results] == [
        "config", "serial", "data", "disk", "files", "clock", "broker", "certificate"]


def test_doctor_on_an_invalid_config(tmp_path: Path) -> None:
    bad = tmp_path / "gateway.toml"
    bad.write_text('[gateway]\nid = "gw/1"\n')
    [result] = run_doctor(bad)
    assert result.failed and "gateway.id" in result.detail


def test_doctor_before_the_certificate_is_installed(tmp_path: Path, http_server: str) -> None:
    """Right after `init`: no certificate yet. Doctor reports it instead of crashing."""
    from provisioning.identity import create_identity

    ident = create_identity(tmp_path / "id", "gw-new")
    tls = TlsFiles(ident.ca, ident.cert, ident.key)  # ca.crt and gateway.crt do not exist yet
    config = _write_config(tmp_path / "gateway.toml", "/dev/null", free_port(), tls, tmp_path)
    text = config.read_text() + f'\n[uplinks.sensorthings_http]\nbase_url = "{http_server}v1.1"\n'
    text += f'\n[uplinks.sensorthings_http.tls]\nca_file = "{ident.ca}"\n'
    text += f'cert_file = "{ident.cert}"\nkey_file = "{ident.key}"\n'
    config.write_text(text)
    results = run_doctor(config, DoctorOptions(ntp_synchronized=lambda: True, timeout_s=2))
    broker = _by_prefix(results, "broker")
    assert broker.failed and "cannot load TLS files" in broker.detail
    cert = _by_prefix(results, "certificate")
    assert cert.failed and "install-cert" in cert.fix
    twin = _by_prefix(results, "twin")
    assert twin.failed


def test_doctor_cli_checks_for_the_service_user(tmp_path: Path, locked_port: str) -> None:
    from typer.testing import CliRunner

    from provisioning.cli import app

    config = _write_config(tmp_path / "gateway.toml", locked_port, free_port(), TlsFiles(
        tmp_path / "ca.crt", tmp_path / "gw.crt", tmp_path / "gw.key"), tmp_path)
    result = CliRunner().invoke(app, ["doctor", "--config", str(config), "--as-user", "nobody",
                                      "--json", "--timeout", "1"])
    results = {r["name"].split(" ")[0]: r for r in json.loads(result.output)}
    assert result.exit_code == 1
    assert results["serial"]["status"] == "fail" and "usermod -aG dialout nobody" in results["serial"]["fix"]


@needs_root
def test_root_only_key_fails_for_the_service_user(open_dir: Path) -> None:
    """A 0600 root key that `nobody` cannot read FAILs; after the suggested fix it passes.
    The verdicts are checked against the kernel (runuser)."""
    from provisioning.doctor import check_readable
    from provisioning.identity import create_identity

    uid, gids = _user("nobody")
    ident = create_identity(open_dir / "identity", "gw-key").directory
    ident.chmod(0o755)
    key = ident / "gateway.key"
    assert key.stat().st_mode & 0o777 == 0o600 and key.stat().st_uid == 0
    result = check_readable([("mqtt key_file", key)], uid=uid, gids=gids)
    assert result is not None and result.failed
    assert "may not read" in result.detail and str(key) in result.detail
    assert result.fix == f"sudo chown nobody {key} (it stays 0600)"
    assert not _can("nobody", "-r", key)

    os.chown(key, uid, -1)  # the fix
    result = check_readable([("mqtt key_file", key)], uid=uid, gids=gids)
    assert result is not None and result.status == "pass"
    assert _can("nobody", "-r", key)

    ident.chmod(0o700)  # a private identity directory owned by root blocks the way
    result = check_readable([("mqtt key_file", key)], uid=uid, gids=gids)
    assert result is not None and result.failed and "cannot enter" in result.detail
    assert result.fix == f"sudo chown -R nobody {ident}"
    assert not _can("nobody", "-r", key)


@needs_root
def test_data_dir_must_be_writable_by_the_service_user(open_dir: Path) -> None:
    from provisioning.doctor import check_data_dir

    uid, gids = _user("nobody")
    data = open_dir / "data"
    data.mkdir(mode=0o755)  # root's, like a directory `mkdir` made by a technician
    result = check_data_dir(data, uid=uid, gids=gids)
    assert result.failed and "may not create files" in result.detail
    assert result.fix == f"sudo chown -R nobody {data}"
    assert not _can("nobody", "-w", data)
    assert check_disk_space(data).status == "pass"  # space alone said nothing

    os.chown(data, uid, -1)
    (data / "sensorthings-ids.json").write_text("{}")  # written by root (`provision register`)
    result = check_data_dir(data, uid=uid, gids=gids)
    assert result.failed and "sensorthings-ids.json" in result.detail
    assert not _can("nobody", "-w", data / "sensorthings-ids.json")
    os.chown(data / "sensorthings-ids.json", uid, -1)
    assert check_data_dir(data, uid=uid, gids=gids).status == "pass"
    assert _can("nobody", "-w", data)

    missing = open_dir / "root-only" / "data"
    (open_dir / "root-only").mkdir(mode=0o755)
    result = check_data_dir(missing, uid=uid, gids=gids)
    assert result.failed and "cannot create it" in result.detail
    assert result.fix == f"sudo install -d -o nobody -m 0750 {missing}"


@needs_root
def test_root_only_serial_device_gets_a_udev_rule_not_the_root_group(open_dir: Path) -> None:
    """A real character device (mknod, like /dev/ttyUSB0 without a udev rule), 0600 root."""
    uid, gids = _user("nobody")
    device = open_dir / "ttyUSB7"
    os.mknod(device, 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # /dev/null's numbers
    result = check_serial_port(str(device), uid=uid, gids=gids)
    assert result.failed and "mode crw-------" in result.detail
    assert "usermod -aG root" not in result.fix
    assert 'KERNEL=="ttyUSB[0-9]*", GROUP="dialout", MODE="0660"' in result.fix
    assert "usermod -aG dialout nobody" in result.fix
    assert not _can("nobody", "-w", device)
    # what the rule does: group dialout, 0660; nobody then joins dialout
    os.chown(device, 0, grp.getgrnam("dialout").gr_gid)
    device.chmod(0o660)
    result = check_serial_port(str(device), uid=uid, gids=gids)
    assert result.failed and result.fix.startswith("sudo usermod -aG dialout nobody")
    dialout = grp.getgrnam("dialout").gr_gid
    assert check_serial_port(str(device), uid=uid, gids=gids | {dialout}).status == "pass"


@needs_root
def test_doctor_cli_as_user_fails_an_unreadable_key_and_data_dir(open_dir: Path) -> None:
    from typer.testing import CliRunner

    from provisioning.cli import app
    from provisioning.identity import create_identity

    ident = create_identity(open_dir / "identity", "gw-doc").directory
    data = open_dir / "data"
    data.mkdir(mode=0o755)
    config = _write_config(open_dir / "gateway.toml", "/dev/null", free_port(), TlsFiles(
        ident / "ca.crt", ident / "gateway.crt", ident / "gateway.key"), data)
    result = CliRunner().invoke(app, ["doctor", "--config", str(config), "--as-user", "nobody",
                                      "--json", "--timeout", "1"])
    assert result.exit_code == 1
    results = {r["name"].split(" ")[0]: r for r in json.loads(result.stdout)}
    assert results["files"]["status"] == "fail" and "gateway.key" in results["files"]["detail"]
    assert results["data"]["status"] == "fail"
    # the same run as a table for people: every path whole on an 80-column terminal
    text = CliRunner().invoke(app, ["doctor", "--config", str(config), "--as-user", "nobody",
                                    "--timeout", "1"], env={"COLUMNS": "80"}).stdout
    assert f"fix: sudo chown -R nobody {ident}" in text or f"sudo chown nobody {ident}" in text
    assert f"fix: sudo chown -R nobody {data}" in text
    assert "…" not in text
