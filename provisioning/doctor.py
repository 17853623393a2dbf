"""`provision doctor`: every check a technician would otherwise do by hand, with the fix.

Each check is a small function returning a :class:`CheckResult`; its inputs (file paths,
user and group ids, the clock, the time-sync reader) are parameters so tests can build a
broken setup for real: a port without permission, a clock far off, a broker that is down.
:func:`run_doctor` derives the list of checks from the gateway's config file.
"""

from __future__ import annotations

import email.utils
import grp
import os
import pwd
import secrets
import shutil
import socket
import ssl
import stat
import struct
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import httpx

from edge.config import GatewayConfig
from edge.sensorthings.settings import SensorThingsHttpSettings
from edge.uplinks.mqtt_settings import MqttSettings
from provisioning.identity import (
    IdentityError,
    key_matches_cert,
    load_certificates,
    load_private_key,
)
from provisioning.identity import cert_info as _cert_info
from provisioning.secrets import is_private
from provisioning.settings import SecuritySettings

Status = Literal["pass", "warn", "fail", "skip"]
Clock = Callable[[], float]
"""Seconds since the Unix epoch (``time.time``); injectable for tests."""


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    status: Status
    detail: str
    fix: str = ""

    @property
    def failed(self) -> bool:
        return self.status == "fail"


def _ok(name: str, detail: str) -> CheckResult:
    return CheckResult(name, "pass", detail)


def _fail(name: str, detail: str, fix: str) -> CheckResult:
    return CheckResult(name, "fail", detail, fix)


def _warn(name: str, detail: str, fix: str) -> CheckResult:
    return CheckResult(name, "warn", detail, fix)


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


READ, WRITE, SEARCH = 4, 2, 1  # permission bits, as in a mode's rwx triplets


def _may(st: os.stat_result, uid: int, gids: set[int], bits: int) -> bool:
    """POSIX permission check from the mode bits, for any user (not just the caller).

    The owner's triplet applies to the owner, else the group's to group members, else the
    others' — as the kernel decides (POSIX ACLs and capabilities are not looked at).
    """
    if uid == 0:
        return True
    if st.st_uid == uid:
        shift = 6
    elif st.st_gid in gids:
        shift = 3
    else:
        shift = 0
    return (st.st_mode >> shift) & bits == bits


def _may_read_write(st: os.stat_result, uid: int, gids: set[int]) -> bool:
    return _may(st, uid, gids, READ | WRITE)


def _describe(path: Path, st: os.stat_result) -> str:
    return (f"{path} (owner {_user_name(st.st_uid)}, group {_group_name(st.st_gid)}, "
            f"mode {stat.filemode(st.st_mode)})")


def _blocking_dir(path: Path, uid: int, gids: set[int]) -> Path | None:
    """The first directory on the way to ``path`` (as written and resolved) that the user
    cannot enter, or None."""
    for chain in (Path(path).absolute(), Path(path).resolve()):
        for parent in reversed(chain.parents):
            if not _may(os.stat(parent), uid, gids, SEARCH):
                return parent
    return None


def _dir_fix(directory: Path, user: str) -> str:
    st = os.stat(directory)
    if st.st_mode & 0o077 == 0:  # a private directory (identity): give it to the user
        return f"sudo chown -R {user} {directory}"
    return f"sudo chmod o+x {directory}"


def _identity(uid: int | None, gids: set[int] | None) -> tuple[int, set[int]]:
    if uid is None:
        uid = os.geteuid()
    if gids is None:
        gids = set(os.getgroups()) | {os.getegid()}
    return uid, gids


# --- serial ----------------------------------------------------------------------------
def check_serial_port(
    port: str, *, uid: int | None = None, gids: set[int] | None = None, source: str = ""
) -> CheckResult:
    """The serial device exists and this user (``uid``/``gids``) may read and write it."""
    name = f"serial port {port}" + (f" ({source})" if source else "")
    path = Path(port)
    if not path.exists():
        return _fail(
            name, "device not found",
            "plug the adapter in; list devices with `ls -l /dev/serial/by-id/` and put that "
            "path in the config (by-id names survive reboots)",
        )
    st = os.stat(path)
    uid, gids = _identity(uid, gids)
    user = _user_name(uid)
    if not _may_read_write(st, uid, gids):
        return _fail(
            name,
            f"user {user} may not read/write it (owner {_user_name(st.st_uid)}, "
            f"group {_group_name(st.st_gid)}, mode {stat.filemode(st.st_mode)})",
            _serial_fix(path, st, user, gids),
        )
    if not stat.S_ISCHR(st.st_mode):
        return _warn(name, "exists but is not a character device", "check the configured path")
    return _ok(name, f"readable and writable by {user}")


def _serial_fix(path: Path, st: os.stat_result, user: str, gids: set[int]) -> str:
    """Join the device's group when that group may read and write it; otherwise the device
    itself has the wrong group or mode (never suggest joining root's group)."""
    group = _group_name(st.st_gid)
    if st.st_mode & 0o060 == 0o060 and st.st_gid != 0:
        return (f"sudo usermod -aG {group} {user}  — then log out and in (or restart the "
                f"service) so the {group} group applies")
    real = Path(path).resolve()
    if str(real).startswith("/dev/pts/"):
        return (f"{real} is a pseudo-terminal of {_user_name(st.st_uid)}: start the program "
                f"that creates it as {user}, or `sudo chown {user} {real}` (until it is "
                "recreated)")
    pattern = real.name.rstrip("0123456789") + "[0-9]*"
    join = ""
    try:
        if grp.getgrnam("dialout").gr_gid not in gids:
            join = f", then sudo usermod -aG dialout {user} and log out and in"
    except KeyError:
        pass
    return (f"the device has no usable group: add a udev rule — echo 'SUBSYSTEM==\"tty\", "
            f"KERNEL==\"{pattern}\", GROUP=\"dialout\", MODE=\"0660\"' | sudo tee "
            "/etc/udev/rules.d/60-duet-edge-serial.rules && sudo udevadm control --reload "
            f"&& sudo udevadm trigger{join}")


# --- files the service reads, the data directory ---------------------------------------
def check_readable(
    files: list[tuple[str, Path]], *, uid: int | None = None, gids: set[int] | None = None
) -> CheckResult | None:
    """Every configured file the gateway reads (TLS keys and certificates, secrets, trust
    anchors) is readable by the service user, directories on the way included."""
    uid, gids = _identity(uid, gids)
    user = _user_name(uid)
    name = f"files readable by {user}"
    present = [(what, Path(p)) for what, p in files if Path(p).exists()]
    if not present:
        return None
    problems, fixes = [], []
    behind: dict[Path, list[str]] = {}  # directory the user cannot enter → files behind it
    for what, path in present:
        blocked = _blocking_dir(path, uid, gids)
        if blocked is not None:
            behind.setdefault(blocked, []).append(f"{what} {path.name}")
        elif not _may(os.stat(path), uid, gids, READ):
            problems.append(f"{what}: may not read {_describe(path, os.stat(path))}")
            private = os.stat(path).st_mode & 0o077 == 0
            fixes.append(f"sudo chown {user} {path}" + (" (it stays 0600)" if private else ""))
    for blocked, whats in behind.items():
        problems.insert(0, f"cannot enter {_describe(blocked, os.stat(blocked))}, which holds "
                        + ", ".join(whats))
        fixes.insert(0, _dir_fix(blocked, user))
    if problems:
        return _fail(name, f"as user {user}: " + "; ".join(problems),
                     "; ".join(dict.fromkeys(fixes)))
    return _ok(name, f"{len(present)} file(s): {', '.join(w for w, _ in present)}")


def check_data_dir(
    path: Path, *, uid: int | None = None, gids: set[int] | None = None
) -> CheckResult:
    """The gateway can create and write its files in ``data_dir`` (outbox, node marks,
    SensorThings id cache)."""
    uid, gids = _identity(uid, gids)
    user = _user_name(uid)
    path = Path(path)
    name = f"data dir {path}"
    create = f"sudo install -d -o {user} -m 0750 {path}"
    if not path.exists():
        parent = path
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if _blocking_dir(parent, uid, gids) is None and _may(os.stat(parent), uid, gids,
                                                             WRITE | SEARCH):
            return _ok(name, f"does not exist yet; {user} can create it in {parent}")
        return _fail(name, f"does not exist and user {user} cannot create it in "
                     f"{_describe(parent, os.stat(parent))}", create)
    if not path.is_dir():
        return _fail(name, "exists but is not a directory", f"move it away, then {create}")
    blocked = _blocking_dir(path, uid, gids)
    if blocked is not None:
        return _fail(name, f"user {user} cannot enter {_describe(blocked, os.stat(blocked))}",
                     _dir_fix(blocked, user))
    if not _may(os.stat(path), uid, gids, WRITE | SEARCH):
        return _fail(name, f"user {user} may not create files in {_describe(path, os.stat(path))}",
                     f"sudo chown -R {user} {path}")
    stuck = [p.name for p in sorted(path.iterdir())
             if p.is_file() and not _may(os.stat(p), uid, gids, READ | WRITE)]
    if stuck:
        return _fail(name, f"user {user} may not write {', '.join(stuck)} in it "
                     "(written by another user, e.g. root running a command)",
                     f"sudo chown -R {user} {path}")
    return _ok(name, f"writable by {user}")


# --- BLE -------------------------------------------------------------------------------
def check_ble(
    *,
    sys_bluetooth: Path = Path("/sys/class/bluetooth"),
    sys_rfkill: Path = Path("/sys/class/rfkill"),
    dbus_socket: Path = Path("/run/dbus/system_bus_socket"),
    uid: int | None = None,
    gids: set[int] | None = None,
) -> CheckResult:
    """A Bluetooth adapter exists, is not blocked, BlueZ is reachable and we may use it."""
    name = "BLE adapter"
    adapters = sorted(p.name for p in sys_bluetooth.glob("hci*")) if sys_bluetooth.is_dir() else []
    if not adapters:
        return _fail(
            name, "no Bluetooth adapter found",
            "enable it (Raspberry Pi: remove dtoverlay=disable-bt from /boot/firmware/config.txt) "
            "or plug in a USB adapter; check with `hciconfig -a` or `bluetoothctl list`",
        )
    for rf in sorted(sys_rfkill.glob("rfkill*")) if sys_rfkill.is_dir() else []:
        if _read(rf / "type") != "bluetooth":
            continue
        if _read(rf / "hard") == "1":
            return _fail(name, f"{adapters[0]} is hard-blocked", "turn on the radio switch")
        if _read(rf / "soft") == "1":
            return _fail(name, f"{adapters[0]} is soft-blocked", "sudo rfkill unblock bluetooth")
    if not dbus_socket.exists():
        return _fail(
            name, "the system D-Bus is not running (BlueZ needs it)",
            "sudo systemctl enable --now dbus bluetooth",
        )
    uid, gids = _identity(uid, gids)
    if uid != 0:
        try:
            bt_gid = grp.getgrnam("bluetooth").gr_gid
        except KeyError:
            bt_gid = None
        if bt_gid is not None and bt_gid not in gids:
            user = _user_name(uid)
            return _fail(
                name, f"user {user} is not in the bluetooth group",
                f"sudo usermod -aG bluetooth {user}  — then log out and in",
            )
    return _ok(name, f"{', '.join(adapters)} present, not blocked, BlueZ reachable")


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


# --- clock -----------------------------------------------------------------------------
def read_ntp_synchronized(run: Callable[[list[str]], str] | None = None) -> bool | None:
    """``timedatectl``'s NTPSynchronized flag; ``None`` when it cannot be read."""
    def _run(cmd: list[str]) -> str:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=5, check=True)
        return done.stdout

    try:
        out = (run or _run)(["timedatectl", "show", "-p", "NTPSynchronized", "--value"])
    except (OSError, subprocess.SubprocessError):
        return None
    value = out.strip().lower()
    return {"yes": True, "no": False}.get(value)


def http_date(url: str, *, verify: ssl.SSLContext | bool = True, timeout: float = 5.0) -> float:
    """The server's clock from its HTTP ``Date`` header, in Unix seconds.

    The header has 1 s resolution and is truncated, so the middle of that second is returned.
    """
    response = httpx.head(url, verify=verify, timeout=timeout, follow_redirects=False)
    header = response.headers.get("date")
    if not header:
        raise ValueError(f"{url} sent no Date header")
    return email.utils.parsedate_to_datetime(header).timestamp() + 0.5


def check_clock(
    *,
    clock: Clock = time.time,
    ntp_synchronized: bool | None = None,
    reference_time: Callable[[], float] | None = None,
    reference_name: str = "",
    max_offset_s: float = 10.0,
) -> CheckResult:
    """Local clock against NTP state and (if given) a server's clock.

    ``reference_time`` returns the reference's Unix time (e.g. :func:`http_date` of the
    twin); it is sampled between two readings of ``clock`` to cancel the request time.
    """
    name = "clock"
    fix_ntp = (
        "sudo timedatectl set-ntp true (allow UDP 123 out, or install chrony); a Pi has no "
        "RTC — add one, or make sure NTP syncs before duet-edge starts"
    )
    if reference_time is not None:
        try:
            before = clock()
            ref = reference_time()
            after = clock()
        except (httpx.HTTPError, OSError, ValueError) as exc:
            return _warn(name, f"could not read the time of {reference_name}: {exc}",
                         "check the twin reachability result below")
        offset = (before + after) / 2 - ref
        if abs(offset) > max_offset_s:
            direction = "ahead of" if offset > 0 else "behind"
            return _fail(
                name,
                f"local clock is {abs(offset):.0f} s {direction} {reference_name} "
                f"(limit {max_offset_s:.0f} s): timestamps would be wrong",
                fix_ntp,
            )
        detail = f"within {abs(offset):.1f} s of {reference_name}"
        if ntp_synchronized is False:
            return _warn(name, detail + ", but NTP is not synchronised", fix_ntp)
        return _ok(name, detail)
    if ntp_synchronized is True:
        return _ok(name, "NTP synchronised (timedatectl)")
    if ntp_synchronized is False:
        return _fail(name, "NTP is not synchronised (timedatectl: NTPSynchronized=no)", fix_ntp)
    return _warn(name, "time sync state unknown (no timedatectl, no reference server)",
                 "run `timedatectl`, or configure the twin URL so doctor can compare clocks")


# --- disk ------------------------------------------------------------------------------
def check_disk_space(
    path: Path, *, min_free_mb: float = 512, min_free_pct: float = 5
) -> CheckResult:
    name = f"disk space {path}"
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    usage = shutil.disk_usage(probe)
    free_mb = usage.free / 1e6
    pct = 100 * usage.free / usage.total if usage.total else 0.0
    detail = f"{free_mb:,.0f} MB free ({pct:.0f} %)"
    if free_mb < min_free_mb or pct < min_free_pct:
        return _fail(
            name, detail + f"; need ≥ {min_free_mb:.0f} MB and ≥ {min_free_pct:.0f} %",
            "free space (`sudo journalctl --vacuum-size=50M`, remove old logs) or lower "
            "[buffer].max_bytes",
        )
    return _ok(name, detail)


# --- certificates ----------------------------------------------------------------------
def check_certificate(
    cert_file: Path,
    key_file: Path | None = None,
    *,
    clock: Clock = time.time,
    warn_days: float = 30,
) -> CheckResult:
    """The gateway certificate is valid now, not about to expire, and matches its key."""
    name = f"certificate {cert_file}"
    try:
        certs = load_certificates(Path(cert_file))
    except (OSError, IdentityError) as exc:
        return _fail(name, f"cannot read it: {exc}",
                     "install the signed chain (`duet-edge provision install-cert`)")
    info = _cert_info(certs[0])
    now = datetime.fromtimestamp(clock(), UTC)
    days = info.remaining_days(now)
    if now < info.not_before:
        return _fail(name, f"not valid before {info.not_before:%Y-%m-%d %H:%M} UTC",
                     "the clock is probably wrong: see the clock check")
    if days < 0:
        return _fail(name, f"{info.subject_cn}: expired on {info.not_after:%Y-%m-%d}",
                     "renew: sign gateway.csr again (`provision ca sign`), then "
                     "`provision install-cert`")
    if key_file is not None:
        problem = _key_problem(Path(key_file), certs[0])
        if problem:
            return _fail(name, problem[0], problem[1])
    if days < warn_days:
        return _warn(name, f"{info.subject_cn}: expires in {days:.0f} days",
                     "renew soon: sign a new CSR and install it")
    return _ok(name, f"{info.subject_cn}: valid until {info.not_after:%Y-%m-%d} ({days:.0f} days)")


def _key_problem(key_file: Path, cert: Any) -> tuple[str, str] | None:
    try:
        key = load_private_key(key_file)
    except (OSError, ValueError, IdentityError) as exc:
        return f"cannot read the key {key_file}: {type(exc).__name__}", "restore the key file"
    if not key_matches_cert(key, cert):
        return (f"{key_file} does not belong to this certificate",
                "install the certificate signed for this gateway's CSR")
    if not is_private(key_file):
        return (f"{key_file} is readable by other users", f"chmod 600 {key_file}")
    return None


# --- network ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TlsFiles:
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


def _tls_context(files: TlsFiles) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(files.ca_file) if files.ca_file else None)
    if files.cert_file:
        ctx.load_cert_chain(str(files.cert_file), str(files.key_file) if files.key_file else None)
    return ctx


def _mqtt_connect_packet(client_id: str) -> bytes:
    cid = client_id.encode()
    variable = b"\x00\x04MQTT\x04\x02\x00\x1e"  # MQTT 3.1.1, clean session, keepalive 30 s
    payload = struct.pack("!H", len(cid)) + cid
    body = variable + payload
    return bytes([0x10, len(body)]) + body


_CONNACK_CODES = {
    1: "unacceptable protocol version", 2: "client id rejected", 3: "server unavailable",
    4: "bad user name or password", 5: "not authorised",
}


def check_mqtt_broker(
    host: str, port: int, files: TlsFiles, *, timeout: float = 5.0, client_id: str | None = None
) -> CheckResult:
    """TCP, TLS (with our client certificate) and an MQTT CONNECT/CONNACK round trip."""
    name = f"broker {host}:{port}"
    try:
        ctx = _tls_context(files)
    except (OSError, ssl.SSLError) as exc:
        return _fail(name, f"cannot load TLS files: {exc}", "check [uplinks.mqtt.tls] paths")
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except socket.gaierror as exc:
        return _fail(name, f"DNS lookup failed: {exc}", "check the host name and DNS / network")
    except TimeoutError:
        return _fail(name, f"no answer within {timeout:.0f} s",
                     "check the network, firewall (TCP port open?) and the broker address")
    except OSError as exc:
        return _fail(name, f"cannot connect: {exc.strerror or exc}",
                     "is the broker running? check host/port in [uplinks.mqtt]")
    try:
        with ctx.wrap_socket(raw, server_hostname=host) as tls:
            details = _tls_details(tls)
            tls.sendall(_mqtt_connect_packet(client_id or f"doctor-{secrets.token_hex(4)}"))
            reply = _recv_exact(tls, 4)
    except ssl.SSLCertVerificationError as exc:
        return _fail(name, f"the broker's certificate is not trusted: {exc.verify_message}",
                     "install the CA that signed the broker (ca_file) and use the broker's "
                     "name exactly as in its certificate")
    except (ssl.SSLError, ConnectionError, OSError) as exc:
        return _fail(
            name, f"TLS session refused by the broker ({type(exc).__name__}: {exc})",
            "the broker refused our certificate: expired, revoked, or signed by another CA — "
            "check the certificate result and `duet-edge provision ca list`",
        )
    finally:
        raw.close()
    if len(reply) < 4 or reply[0] != 0x20:
        return _fail(name, f"{details}; the broker closed the connection after TLS "
                     "(client certificate refused)",
                     "certificate expired, revoked or from another CA: renew / re-sign it")
    if reply[3] != 0:
        reason = _CONNACK_CODES.get(reply[3], f"code {reply[3]}")
        return _fail(name, f"{details}; MQTT CONNECT refused: {reason}",
                     "the broker does not accept this identity: check its ACL / CN")
    return _ok(name, f"{details}; MQTT session accepted")


def _recv_exact(sock: ssl.SSLSocket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _tls_details(tls: ssl.SSLSocket) -> str:
    peer = tls.getpeercert() or {}
    subject = dict(x[0] for x in peer.get("subject", ()))  # type: ignore[misc]
    not_after = peer.get("notAfter", "?")
    cipher = tls.cipher()
    return (f"{tls.version()} {cipher[0] if cipher else '?'}, server "
            f"CN={subject.get('commonName', '?')} valid until {not_after}")


def check_http_endpoint(
    url: str, files: TlsFiles, *, timeout: float = 5.0, name: str = "twin"
) -> CheckResult:
    """An HTTP(S) GET of ``url`` with the given TLS files (no other credentials)."""
    label = f"{name} {url}"
    try:
        verify: ssl.SSLContext | bool = _tls_context(files) if url.startswith("https") else True
    except (OSError, ssl.SSLError) as exc:
        return _fail(label, f"cannot load TLS files: {exc}", "check the tls paths in the config")
    return _http_check(label, lambda: httpx.get(url, verify=verify, timeout=timeout), timeout)


def check_sensorthings(settings: Any, *, timeout: float = 5.0) -> CheckResult:
    """The twin's service root, with exactly the uplink's HTTP client: TLS, client
    certificate and token/basic credentials as configured in ``[uplinks.sensorthings_http]``."""
    import asyncio

    from edge.sensorthings.client import SensorThingsConfigError, build_http_client

    label = f"twin {settings.base_url}"

    async def get() -> httpx.Response:
        async with build_http_client(settings) as http:
            # Service roots answer with or without the trailing slash, depending on the server.
            response = await http.get(settings.base_url + "/", timeout=timeout)
            if response.status_code == 404:
                response = await http.get(settings.base_url, timeout=timeout)
            return response

    try:
        return _http_check(label, lambda: asyncio.run(get()), timeout)
    except SensorThingsConfigError as exc:
        return _fail(label, str(exc), "check auth.token_file / password_file (mode 0600)")
    except (OSError, ssl.SSLError) as exc:
        return _fail(label, f"cannot load TLS files: {exc}", "check the tls paths in the config")


def _http_check(label: str, request: Callable[[], httpx.Response], timeout: float) -> CheckResult:
    try:
        response = request()
    except httpx.ConnectError as exc:
        cause = str(exc)
        if "CERTIFICATE_VERIFY_FAILED" in cause:
            return _fail(label, f"TLS: server certificate not trusted ({cause})",
                         "set tls.ca_file to the CA that signed the twin's certificate")
        return _fail(label, f"cannot connect: {cause}", "check the URL, network and firewall")
    except httpx.TimeoutException:
        return _fail(label, f"no answer within {timeout:.0f} s", "check the network / URL")
    except httpx.HTTPError as exc:
        return _fail(label, f"HTTP error: {type(exc).__name__}: {exc}",
                     "the server refused the TLS session (client certificate?) or the URL is wrong")
    version = response.extensions.get("http_version", b"").decode() if response.extensions else ""
    if response.status_code in (401, 403):
        return _fail(label, f"HTTP {response.status_code}: credentials refused",
                     "check the token / client certificate configured for the twin")
    if response.status_code >= 400:
        return _fail(label, f"HTTP {response.status_code}", "check base_url (service root)")
    return _ok(label, f"HTTP {response.status_code} {version}".strip())


# --- config ----------------------------------------------------------------------------
def check_config(path: Path) -> CheckResult:
    name = f"config {path}"
    try:
        from edge.config import ConfigError, load_config
    except ImportError as exc:  # pragma: no cover - the gateway package always has it
        return _warn(name, f"cannot validate: {exc}", "reinstall duet-edge")
    try:
        load_config(path)
    except ConfigError as exc:
        return _fail(name, "; ".join(exc.problems), "fix the keys named above "
                     "(`duet-edge config check FILE` explains each)")
    return _ok(name, "valid")


# --- signed bundles ----------------------------------------------------------------------
def check_bundles(security: Any) -> CheckResult:
    """The bundle trust anchor loads and the store is writable (``[security.bundles]``)."""
    from provisioning.bundles import BundleError, BundleStore, load_trust_anchors

    name = "signed bundles"
    bundles = getattr(security, "bundles", None)
    if bundles is None:
        return _warn(name, "no [security.bundles] trust anchor: config pushes are refused",
                     "add [security.bundles] trust_anchor = <PEM with the Ed25519 public key>")
    try:
        anchors = load_trust_anchors(bundles.trust_anchor)
    except (OSError, BundleError, ValueError) as exc:
        return _fail(name, f"trust anchor unusable: {exc}",
                     "install the public key from `provision bundle keygen` (trust.pem)")
    store = Path(bundles.store_dir)
    probe = store if store.exists() else store.parent
    if not os.access(probe, os.W_OK):
        return _fail(name, f"{probe} is not writable", f"create {store} owned by the service user")
    active = BundleStore(store, "", anchors)
    versions = ", ".join(
        f"{kind} v{active.current_version(kind)}" for kind in ("config", "calibration")
        if active.current_version(kind) is not None
    ) or "none applied yet"
    return _ok(name, f"{len(anchors)} trusted key(s) ({', '.join(anchors)}); active: {versions}")


# --- the whole run ---------------------------------------------------------------------
@dataclass
class DoctorOptions:
    clock: Clock = time.time
    uid: int | None = None
    gids: set[int] | None = None
    ntp_synchronized: Callable[[], bool | None] = read_ntp_synchronized
    timeout_s: float = 5.0
    time_url: str | None = None
    ble: Callable[[], CheckResult] = check_ble


def run_doctor(config_path: Path, options: DoctorOptions | None = None) -> list[CheckResult]:
    """All checks that apply to the gateway described by ``config_path``."""
    opts = options or DoctorOptions()
    results = [check_config(config_path)]
    try:
        from edge.config import ConfigError, load_config

        config = load_config(config_path)
    except (ImportError, ConfigError):
        return results
    results += [check_serial_port(s.port, uid=opts.uid, gids=opts.gids, source=s.name)
                for s in config.sources if s.port]
    if any(_is_ble(s.type) for s in config.sources):
        results.append(opts.ble())
    results.append(check_data_dir(config.gateway.data_dir, uid=opts.uid, gids=opts.gids))
    results.append(check_disk_space(config.gateway.data_dir))
    readable = check_readable(_service_files(config), uid=opts.uid, gids=opts.gids)
    if readable is not None:
        results.append(readable)
    mqtt = config.settings(MqttSettings)
    sta = config.settings(SensorThingsHttpSettings)
    time_url = opts.time_url or (sta.base_url if sta is not None else None)
    reference = None
    if time_url:
        sta_tls = sta.tls if sta is not None else None
        verify = _reference_context(_tls_files(sta_tls)) if time_url.startswith("https") else True

        def reference() -> float:
            return http_date(time_url, verify=verify, timeout=opts.timeout_s)
    results.append(check_clock(clock=opts.clock, ntp_synchronized=opts.ntp_synchronized(),
                               reference_time=reference, reference_name=time_url or ""))
    if mqtt is not None:
        files = _tls_files(mqtt.tls)
        if mqtt.tls is None:
            results.append(_fail(f"broker {mqtt.host}:{mqtt.port}", "MQTT without TLS",
                                 "add [uplinks.mqtt.tls] with ca_file, cert_file, key_file"))
        else:
            results.append(check_mqtt_broker(mqtt.host, mqtt.port, files,
                                             timeout=opts.timeout_s,
                                             client_id=f"{config.gateway.id}-doctor"))
            if files.cert_file:
                results.append(check_certificate(files.cert_file, files.key_file, clock=opts.clock))
    if sta is not None:
        results.append(check_sensorthings(sta, timeout=opts.timeout_s))
    security = config.settings(SecuritySettings)
    if security is not None:
        results.append(check_bundles(security))
    return results


def _service_files(config: GatewayConfig) -> list[tuple[str, Path]]:
    """(what, path) of every file the gateway service reads that the config names."""
    files: list[tuple[str, Path]] = []
    mqtt = config.settings(MqttSettings)
    if mqtt is not None:
        tls = _tls_files(mqtt.tls)
        files += [(f"mqtt {k}", p) for k, p in (("ca_file", tls.ca_file), ("cert_file",
                  tls.cert_file), ("key_file", tls.key_file), ("password_file",
                  mqtt.password_file)) if p is not None]
    sta = config.settings(SensorThingsHttpSettings)
    if sta is not None:
        tls = _tls_files(sta.tls)
        auth = sta.auth
        files += [(f"twin {k}", p) for k, p in (("ca_file", tls.ca_file), ("cert_file",
                  tls.cert_file), ("key_file", tls.key_file), ("token_file", auth.token_file),
                  ("password_file", auth.password_file)) if p is not None]
    return files


def _reference_context(files: TlsFiles) -> ssl.SSLContext | bool:
    """TLS for reading the reference clock: our files if they load, else the system store.

    Other checks report broken TLS files; the clock check should still run.
    """
    try:
        return _tls_context(files)
    except (OSError, ssl.SSLError):
        try:
            return _tls_context(TlsFiles(ca_file=files.ca_file))
        except (OSError, ssl.SSLError):
            return True


def _tls_files(tls: Any) -> TlsFiles:
    if tls is None:
        return TlsFiles()
    return TlsFiles(getattr(tls, "ca_file", None), getattr(tls, "cert_file", None),
                    getattr(tls, "key_file", None))


def _is_ble(type_name: str) -> bool:
    """True for source types that need a Bluetooth adapter."""
    return type_name in ("ble", "node_ble")
