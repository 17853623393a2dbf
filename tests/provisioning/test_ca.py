"""Identity creation and the small CA: modes, CN rules, revocation, expiry reading."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from provisioning.ca import CAError, CertificateAuthority
from provisioning.identity import (
    IdentityError,
    check_gateway_id,
    create_identity,
    key_matches_cert,
    load_csr,
    load_private_key,
    new_gateway_id,
    read_cert_expiry,
)
from provisioning.secrets import write_public


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_identity_files_and_modes(tmp_path: Path) -> None:
    ident = create_identity(tmp_path / "id", "gw-site-1")
    assert _mode(ident.key) == 0o600
    assert _mode(ident.directory) == 0o700
    assert _mode(ident.csr) == 0o644
    csr = load_csr(ident.csr)
    assert csr.is_signature_valid
    assert csr.subject.rfc4514_string().startswith("CN=gw-site-1")
    assert b"PRIVATE KEY" not in ident.csr.read_bytes()
    assert not list(ident.directory.glob(".*tmp*")), "no temporary files left behind"


def test_identity_is_not_overwritten_by_accident(tmp_path: Path) -> None:
    ident = create_identity(tmp_path / "id", "gw-1")
    before = ident.key.read_bytes()
    with pytest.raises(IdentityError, match="already exists"):
        create_identity(tmp_path / "id", "gw-1")
    assert ident.key.read_bytes() == before
    create_identity(tmp_path / "id", "gw-1", overwrite=True)
    assert ident.key.read_bytes() != before
    assert _mode(ident.key) == 0o600


BAD_IDS = ["", "gw/1", "gw+", "gw#", "-gw", "receiver-twin", "x" * 65, "gw 1"]


@pytest.mark.parametrize("bad", BAD_IDS)
def test_bad_gateway_ids_are_refused(bad: str) -> None:
    with pytest.raises(IdentityError):
        check_gateway_id(bad)


def test_generated_ids_are_valid_and_unique() -> None:
    ids = {new_gateway_id() for _ in range(100)}
    assert len(ids) == 100
    for gid in ids:
        check_gateway_id(gid)


def test_ca_signs_csr_and_chain_verifies(tmp_path: Path) -> None:
    ca = CertificateAuthority.create(tmp_path / "ca")
    assert _mode(ca.key_path) == 0o600
    ident = create_identity(tmp_path / "id", "gw-1")
    cert = ca.sign_csr(load_csr(ident.csr), days=90)
    write_public(ident.cert, ca.chain_pem(cert))
    cert.verify_directly_issued_by(ca.cert)
    assert key_matches_cert(load_private_key(ident.key), cert)
    info = read_cert_expiry(ident.cert)
    assert info.subject_cn == "gw-1"
    assert 89.9 < info.remaining_days() <= 90
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH in eku
    [row] = ca.issued()
    assert row.common_name == "gw-1" and row.state() == "valid"
    # Reopening the directory gives the same CA.
    assert CertificateAuthority.open(tmp_path / "ca").cert == ca.cert


def test_ca_refuses_role_and_cn_mismatch(tmp_path: Path) -> None:
    ca = CertificateAuthority.create(tmp_path / "ca")
    gw = create_identity(tmp_path / "gw", "gw-1")
    with pytest.raises(CAError, match="receiver"):
        ca.sign_csr(load_csr(gw.csr), role="receiver")
    with pytest.raises(CAError, match="role"):
        ca.sign_csr(load_csr(gw.csr), role="admin")  # type: ignore[arg-type]
    key_pem, cert = ca.issue_key_and_cert("receiver-twin", "receiver")
    assert b"PRIVATE KEY" in key_pem
    assert cert.subject.rfc4514_string().startswith("CN=receiver-twin")
    with pytest.raises(CAError, match="reserved for receivers"):
        ca.issue_key_and_cert("receiver-evil", "gateway")


def test_ca_refuses_tampered_csr(tmp_path: Path) -> None:
    ca = CertificateAuthority.create(tmp_path / "ca")
    gw_a = load_csr(create_identity(tmp_path / "a", "gw-a").csr)
    gw_b = load_csr(create_identity(tmp_path / "b", "gw-b").csr)
    # Graft A's subject onto B's public key and signature: the signature no longer matches.
    from cryptography.hazmat.primitives.serialization import Encoding

    der_a, der_b = gw_a.public_bytes(Encoding.DER), gw_b.public_bytes(Encoding.DER)
    forged = der_b.replace(b"gw-b", b"gw-a")
    assert forged != der_b and der_a != forged
    with pytest.raises(CAError, match="signature"):
        ca.sign_csr(x509.load_der_x509_csr(forged))


def test_revocation_updates_index_and_crl(tmp_path: Path) -> None:
    ca = CertificateAuthority.create(tmp_path / "ca")
    first = ca.sign_csr(load_csr(create_identity(tmp_path / "a", "gw-a").csr))
    ca.sign_csr(load_csr(create_identity(tmp_path / "b", "gw-b").csr))
    [revoked] = ca.revoke("gw-a", reason="stolen")
    assert revoked.serial == format(first.serial_number, "x")
    crl = x509.load_pem_x509_crl(ca.crl_path.read_bytes())
    assert crl.is_signature_valid(ca.cert.public_key())  # type: ignore[arg-type]
    assert crl.get_revoked_certificate_by_serial_number(first.serial_number) is not None
    assert len(crl) == 1
    states = {r.common_name: r.state() for r in ca.issued()}
    assert states == {"gw-a": "revoked", "gw-b": "valid"}
    with pytest.raises(CAError, match="no valid certificate"):
        ca.revoke("gw-a")


def test_expired_certificates_are_reported(tmp_path: Path) -> None:
    ca = CertificateAuthority.create(tmp_path / "ca")
    now = datetime.now(UTC)
    cert = ca.sign_csr(
        load_csr(create_identity(tmp_path / "a", "gw-a").csr),
        not_before=now - timedelta(days=10), not_after=now - timedelta(days=1),
    )
    path = write_public(tmp_path / "a" / "gateway.crt", ca.chain_pem(cert))
    info = read_cert_expiry(path)
    assert not info.is_valid_at() and info.remaining_days() < 0
    assert ca.issued()[0].state() == "expired"


def test_init_gives_the_key_to_the_service_user(tmp_path: Path) -> None:
    import pwd

    from typer.testing import CliRunner

    from provisioning.cli import app

    nobody = pwd.getpwnam("nobody")
    result = CliRunner().invoke(app, [
        "init", "--broker-host", "mqtt.example", "--gateway-id", "gw-own",
        "--identity-dir", str(tmp_path / "id"), "--config", str(tmp_path / "gw.toml"),
        "--data-dir", str(tmp_path / "data"), "--owner", "nobody"])
    assert result.exit_code == 0, result.output
    key = tmp_path / "id" / "gateway.key"
    assert (key.stat().st_uid, _mode(key)) == (nobody.pw_uid, 0o600)
    assert (tmp_path / "id").stat().st_uid == nobody.pw_uid
    bad = CliRunner().invoke(app, [
        "init", "--broker-host", "m", "--gateway-id", "gw-own2", "--identity-dir",
        str(tmp_path / "id2"), "--config", str(tmp_path / "gw2.toml"), "--owner", "no-such-user"])
    assert bad.exit_code == 1 and "no such user" in bad.output
    assert not (tmp_path / "id2").exists()  # refused before anything was created


def test_ca_key_encrypted_with_a_passphrase(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from provisioning.cli import app

    runner = CliRunner()
    secret = "correct horse battery staple 42"
    monkeypatch.setenv("DUET_CA_PASS", secret)
    monkeypatch.setenv("WRONG_PASS", "nope")
    ca_dir = str(tmp_path / "ca")
    outputs = [runner.invoke(app, ["ca", "create", "--ca-dir", ca_dir,
                                   "--passphrase-env", "DUET_CA_PASS"])]
    assert outputs[-1].exit_code == 0, outputs[-1].output
    assert b"ENCRYPTED PRIVATE KEY" in (tmp_path / "ca" / "ca.key").read_bytes()
    csr = create_identity(tmp_path / "gw", "gw-enc").csr
    outputs.append(runner.invoke(app, ["ca", "sign", str(csr), "--ca-dir", ca_dir]))
    assert outputs[-1].exit_code == 1 and "encrypted" in outputs[-1].output
    outputs.append(runner.invoke(app, ["ca", "sign", str(csr), "--ca-dir", ca_dir,
                                       "--passphrase-env", "WRONG_PASS"]))
    assert outputs[-1].exit_code == 1 and "wrong passphrase" in " ".join(outputs[-1].output.split())
    outputs.append(runner.invoke(app, ["ca", "sign", str(csr), "--ca-dir", ca_dir,
                                       "--passphrase-env", "DUET_CA_PASS"]))
    assert outputs[-1].exit_code == 0, outputs[-1].output
    outputs.append(runner.invoke(app, ["ca", "list", "--ca-dir", ca_dir]))  # no key needed
    assert outputs[-1].exit_code == 0 and "gw-enc" in outputs[-1].output
    assert all(secret not in r.output for r in outputs)
