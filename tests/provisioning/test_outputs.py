"""Label, inventory, starting config, broker-config CLI, bundle settings, twin TLS check."""

from __future__ import annotations

import csv
import http.server
import io
import json
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from provisioning.bundles import BundleError, generate_signing_key, load_signing_key, sign_bundle
from provisioning.ca import CertificateAuthority
from provisioning.cli import app
from provisioning.doctor import TlsFiles, check_http_endpoint
from provisioning.identity import IdentityPaths, create_identity, load_csr
from provisioning.inventory import collect, to_csv, write_record
from provisioning.label import LabelSpec, qr_matrix, render_label, write_label
from provisioning.secrets import write_public, write_secret
from provisioning.settings import BundleSettings, SecuritySettings, apply_bundle_message
from provisioning.starter import SourceSpec, StarterSpec, render, validate
from tests.plugins.tls_broker import MOSQUITTO, free_port

runner = CliRunner()


def test_label_qr_encodes_the_claim_url(tmp_path: Path) -> None:
    spec = LabelSpec("gw-7f3a9c21e0", "https://twin.example/claim/gw-7f3a9c21e0", "+32 9 000 00 00")
    image = render_label(spec)
    matrix = qr_matrix(spec.claim_url)
    # Sample each module centre of the drawn code and compare with the expected matrix.
    box, border = spec.box_size, spec.border
    for y, row in enumerate(matrix):
        for x, dark in enumerate(row):
            px = image.getpixel(((border + x) * box + box // 2, (border + y) * box + box // 2))
            assert (px == (0, 0, 0)) == dark, (x, y)
    png = write_label(spec, tmp_path / "label.png")
    pdf = write_label(spec, tmp_path / "label.pdf")
    assert Image.open(png).size == image.size
    assert pdf.read_bytes().startswith(b"%PDF")
    with pytest.raises(ValueError, match=r"\.png or \.pdf"):
        write_label(spec, tmp_path / "label.jpg")


def test_inventory_csv_and_json(tmp_path: Path) -> None:
    ca = CertificateAuthority.create(tmp_path / "ca")
    for gid in ("gw-a", "gw-b"):
        ca.sign_csr(load_csr(create_identity(tmp_path / gid, gid).csr))
    ca.issue_key_and_cert("broker.example", "server")
    ca.revoke("gw-b", reason="stolen")
    records = tmp_path / "records"
    write_record(records, "gw-a", name="Gent", latitude=51.0, longitude=3.7)
    write_record(records, "gw-c", name="not yet signed")
    rows = collect(tmp_path / "ca", records)
    by_id = {r["gateway_id"]: r for r in rows}
    assert set(by_id) == {"gw-a", "gw-b", "gw-c"}  # no server certificates
    assert by_id["gw-a"]["state"] == "valid" and by_id["gw-a"]["name"] == "Gent"
    assert by_id["gw-b"]["state"] == "revoked" and by_id["gw-b"]["reason"] == "stolen"
    assert by_id["gw-c"]["state"] == "no certificate"
    parsed = list(csv.DictReader(io.StringIO(to_csv(rows))))
    assert [r["gateway_id"] for r in parsed] == [r["gateway_id"] for r in rows]
    result = runner.invoke(app, ["inventory", "--ca-dir", str(tmp_path / "ca"), "--records",
                                 str(records), "--format", "json"])
    assert result.exit_code == 0 and len(json.loads(result.output)) == 3
    for row in rows:
        assert not any("PRIVATE" in str(v) for v in row.values())


def test_starting_config_with_twin_validates(tmp_path: Path) -> None:
    spec = StarterSpec(
        gateway_id="gw-1", identity=IdentityPaths(tmp_path / "id"),
        sources=(SourceSpec.parse("pm=sds011:/dev/ttyUSB0"), SourceSpec.parse('pm2=pms5003:/dev/x"y')),
        broker_host="mqtt.example", name='School "De Vlinder"', latitude=51.0, longitude=3.7,
        twin_url="https://twin.example/v1.1",
    )
    text = render(spec)
    validate(text, "starter")
    assert 'name = "School \\"De Vlinder\\""' in text
    with pytest.raises(ValueError, match="NAME=TYPE"):
        SourceSpec.parse("sds011")


def test_init_refuses_invalid_starting_config(tmp_path: Path) -> None:
    result = runner.invoke(app, ["init", "--broker-host", "h", "--identity-dir", str(tmp_path / "i"),
                                 "--config", str(tmp_path / "c.toml"), "--source", "pm=nonsense:/x"])
    assert result.exit_code == 1 and "unknown sensor type" in result.output
    assert not (tmp_path / "i" / "gateway.key").exists()


def test_broker_config_cli_renders_a_config_mosquitto_accepts(tmp_path: Path) -> None:
    ca_dir, out = tmp_path / "ca", tmp_path / "broker"
    assert runner.invoke(app, ["ca", "create", "--ca-dir", str(ca_dir)]).exit_code == 0
    port = free_port()
    result = runner.invoke(app, ["broker-config", "--ca-dir", str(ca_dir), "--out-dir", str(out),
                                 "--host", "127.0.0.1", "--port", str(port), "--run-as", "root",
                                 "--persistence-dir", str(tmp_path / "state"),
                                 "--receiver", "receiver-twin", "--receiver", "receiver-ops"])
    assert result.exit_code == 0, result.output
    acl = (out / "acl.conf").read_text()
    assert "pattern write duet/v1/%u/obs" in acl and "user receiver-ops" in acl
    assert (out / "server.key").stat().st_mode & 0o777 == 0o600
    proc = subprocess.Popen([MOSQUITTO, "-c", str(out / "mosquitto.conf")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        log = out / "mosquitto.log"
        while time.monotonic() < deadline and "running" not in (log.read_text() if log.exists() else ""):
            assert proc.poll() is None, log.read_text() if log.exists() else "mosquitto exited"
            time.sleep(0.05)
        assert "running" in log.read_text()
    finally:
        proc.terminate()
        proc.wait(5)
    bad = runner.invoke(app, ["broker-config", "--ca-dir", str(ca_dir), "--out-dir", str(out),
                              "--host", "127.0.0.1", "--receiver", "twin"])
    assert bad.exit_code == 1 and "receiver-" in bad.output


def test_apply_bundle_message_from_settings(tmp_path: Path) -> None:
    generate_signing_key(tmp_path / "k.key", tmp_path / "trust.pem")
    settings = SecuritySettings(bundles=BundleSettings(trust_anchor=tmp_path / "trust.pem",
                                                       store_dir=tmp_path / "store"))
    calib = sign_bundle("calibration", 1, {"sds011.json": b'{"slope": 1.1}'},
                        load_signing_key(tmp_path / "k.key"))
    applied = apply_bundle_message(calib, settings, "gw-1")
    assert applied.kind == "calibration" and (applied.path / "sds011.json").exists()
    with pytest.raises(BundleError, match="refused"):
        apply_bundle_message(calib, SecuritySettings(), "gw-1")
    with pytest.raises(BundleError, match="not a duet bundle"):
        apply_bundle_message(b"garbage", settings, "gw-1")


@pytest.fixture
def mtls_server(tmp_path: Path) -> Iterator[tuple[str, CertificateAuthority]]:
    """A real HTTPS server that requires a client certificate from our CA."""
    ca = CertificateAuthority.create(tmp_path / "twin-ca")
    key_pem, cert = ca.issue_key_and_cert("localhost", "server", hosts=("127.0.0.1", "localhost"))
    key = write_secret(tmp_path / "twin" / "server.key", key_pem)
    crt = write_public(tmp_path / "twin" / "server.crt", ca.chain_pem(cert))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(crt), str(key))
    ctx.load_verify_locations(str(ca.cert_path))
    ctx.verify_mode = ssl.CERT_REQUIRED

    class Quiet(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/v1.1", ca
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_twin_check_with_client_certificate(mtls_server: tuple[str, CertificateAuthority],
                                             tmp_path: Path) -> None:
    url, ca = mtls_server
    ident = create_identity(tmp_path / "gw", "gw-twin")
    write_public(ident.cert, ca.chain_pem(ca.sign_csr(load_csr(ident.csr))))
    ok = check_http_endpoint(url, TlsFiles(ca.cert_path, ident.cert, ident.key), timeout=3)
    assert ok.status == "pass", ok
    no_cert = check_http_endpoint(url, TlsFiles(ca.cert_path), timeout=3)
    assert no_cert.status == "fail"
    untrusted = check_http_endpoint(url, TlsFiles(), timeout=3)
    assert untrusted.status == "fail" and "not trusted" in untrusted.detail


@pytest.fixture
def token_server() -> Iterator[tuple[str, str]]:
    """A real HTTP server that answers 200 only with the right bearer token."""
    token = "tok-" + "9f8e7d6c5b4a39281706f5e4d3c2b1a0"

    class Guarded(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ok = self.headers.get("Authorization") == f"Bearer {token}"
            self.send_response(200 if ok else 401)
            self.end_headers()
            self.wfile.write(b"{}")

        do_HEAD = do_GET

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Guarded)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1.1", token
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_doctor_uses_the_uplink_token_and_never_shows_it(
    token_server: tuple[str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from provisioning.doctor import DoctorOptions, run_doctor

    caplog.set_level(logging.DEBUG)
    url, token = token_server
    token_file = write_secret(tmp_path / "twin.token", token.encode())
    config = tmp_path / "gw.toml"

    def run(token_path: Path) -> list:
        config.write_text(f"""
[gateway]
id = "gw-tok"
data_dir = "{tmp_path}"

[[sources]]
name = "pm"
type = "sds011"
port = "/dev/null"

[uplinks.sensorthings_http]
base_url = "{url}"
auth = {{ type = "bearer", token_file = "{token_path}" }}
""")
        return run_doctor(config, DoctorOptions(ntp_synchronized=lambda: True, timeout_s=3))

    good = {r.name.split()[0]: r for r in run(token_file)}
    assert good["twin"].status == "pass", good["twin"]
    assert good["clock"].status == "pass"  # compared with the twin's Date header
    wrong = write_secret(tmp_path / "wrong.token", b"tok-wrong-wrong-wrong")
    bad = {r.name.split()[0]: r for r in run(wrong)}
    assert bad["twin"].failed and "credentials refused" in bad["twin"].detail
    missing = {r.name.split()[0]: r for r in run(tmp_path / "absent.token")}
    assert missing["twin"].failed and "token" in missing["twin"].detail
    shown = " ".join(f"{r.detail} {r.fix}" for r in [*good.values(), *bad.values()])
    assert token not in shown and token not in caplog.text
    assert "tok-wrong" not in caplog.text


def test_doctor_bundle_check(tmp_path: Path) -> None:
    from provisioning.doctor import check_bundles

    assert check_bundles(SecuritySettings()).status == "warn"
    broken = SecuritySettings(bundles=BundleSettings(trust_anchor=tmp_path / "missing.pem",
                                                     store_dir=tmp_path / "store"))
    result = check_bundles(broken)
    assert result.failed and "trust anchor unusable" in result.detail
    generate_signing_key(tmp_path / "k.key", tmp_path / "trust.pem")
    good = SecuritySettings(bundles=BundleSettings(trust_anchor=tmp_path / "trust.pem",
                                                   store_dir=tmp_path / "store"))
    assert check_bundles(good).status == "pass"
    apply_bundle_message(sign_bundle("calibration", 4, {"a.json": b"{}"},
                                     load_signing_key(tmp_path / "k.key")), good, "gw-1")
    assert "calibration v4" in check_bundles(good).detail


def test_gateway_cli_survives_without_the_provisioning_extra() -> None:
    """Without cryptography installed, `duet-edge` works and `provision` says what to install."""
    import sys

    code = (
        "import sys; sys.modules['cryptography'] = None\n"
        "from typer.testing import CliRunner\n"
        "from edge.cli import app\n"
        "r = CliRunner().invoke(app, ['provision', 'ca', 'create', '--ca-dir', 'x'])\n"
        "print(r.exit_code, r.output)\n"
        "r = CliRunner().invoke(app, ['--help'])\n"
        "print(r.exit_code)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr
    first, *_rest, last = out.stdout.strip().splitlines()
    assert first.startswith("3 ") and "pip install 'duet-edge[provisioning]'" in out.stdout
    assert last == "0"
