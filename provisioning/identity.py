"""A gateway's identity: its id, a private key that never leaves the device, and a CSR.

Keys are ECDSA P-256: every TLS stack a broker or twin may run accepts it for client
certificates. (Bundle signing uses Ed25519, see :mod:`provisioning.bundles`.)

Layout of an identity directory (default ``/etc/duet-edge/identity``)::

    gateway.key   0600  PEM PKCS#8 private key (never printed, never logged)
    gateway.csr   0644  PEM certificate signing request, CN = gateway id
    gateway.crt   0644  certificate chain from the CA, once signed
    ca.crt        0644  the CA that signed the broker's / twin's server certificates
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from provisioning.secrets import ensure_private_dir, write_public, write_secret

# Same rule as ``gateway.id`` in edge/config.py, minus characters that MQTT topic filters
# or Mosquitto's ACL substitution would treat specially ('+', '#', '/').
GATEWAY_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
GATEWAY_ID_HELP = "1-64 characters: letters, digits, '_', '.', '-', starting with a letter or digit"
# Certificates whose CN starts with this prefix are receivers (twin ingest), never gateways.
RECEIVER_PREFIX = "receiver-"
ORGANIZATION = "duet-edge"

KEY_FILE = "gateway.key"
CSR_FILE = "gateway.csr"
CERT_FILE = "gateway.crt"
CA_FILE = "ca.crt"


class IdentityError(ValueError):
    """An identity that cannot be created or used; the message says what to do."""


def new_gateway_id(prefix: str = "gw") -> str:
    """A fresh random gateway id such as ``gw-7f3a9c21e0``: unguessable, not a MAC address."""
    return f"{prefix}-{secrets.token_hex(5)}"


def check_gateway_id(gateway_id: str) -> str:
    """Return ``gateway_id`` if usable as a certificate CN and MQTT topic level, else raise."""
    if not GATEWAY_ID_PATTERN.match(gateway_id):
        raise IdentityError(f"gateway id {gateway_id!r} is not allowed: {GATEWAY_ID_HELP}")
    if gateway_id.startswith(RECEIVER_PREFIX):
        raise IdentityError(
            f"gateway id {gateway_id!r} starts with {RECEIVER_PREFIX!r}, "
            "which is reserved for receivers"
        )
    return gateway_id


def generate_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def private_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def build_csr(key: ec.EllipticCurvePrivateKey, common_name: str) -> x509.CertificateSigningRequest:
    """A CSR whose subject CN is the identity the broker will use as MQTT username."""
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    return x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())


@dataclass(frozen=True, slots=True)
class IdentityPaths:
    directory: Path

    @property
    def key(self) -> Path:
        return self.directory / KEY_FILE

    @property
    def csr(self) -> Path:
        return self.directory / CSR_FILE

    @property
    def cert(self) -> Path:
        return self.directory / CERT_FILE

    @property
    def ca(self) -> Path:
        return self.directory / CA_FILE


def create_identity(directory: Path, gateway_id: str, *, overwrite: bool = False) -> IdentityPaths:
    """Create the private key (0600) and CSR for ``gateway_id`` under ``directory``.

    The key is generated here and written only to ``gateway.key``; nothing returned or
    logged contains it.
    """
    check_gateway_id(gateway_id)
    paths = IdentityPaths(ensure_private_dir(Path(directory)))
    if paths.key.exists() and not overwrite:
        raise IdentityError(
            f"{paths.key} already exists; this gateway already has an identity "
            "(use --force to replace it, then revoke the old certificate)"
        )
    key = generate_key()
    write_secret(paths.key, private_key_pem(key), overwrite=overwrite)
    csr = build_csr(key, gateway_id)
    write_public(paths.csr, csr.public_bytes(serialization.Encoding.PEM))
    return paths


def give_to(paths: IdentityPaths, user: str) -> None:
    """Make ``user`` (the gateway service account) own the identity directory and files.

    The key stays 0600: only that user (and root) can read it.
    """
    import pwd

    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise IdentityError(f"no such user {user!r} (create the service account first)") from None
    for path in (paths.directory, paths.key, paths.csr, paths.cert, paths.ca):
        if path.exists():
            os.chown(path, entry.pw_uid, entry.pw_gid)


def load_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise IdentityError(f"{path}: expected an ECDSA private key")
    return key


def load_csr(path: Path) -> x509.CertificateSigningRequest:
    try:
        return x509.load_pem_x509_csr(Path(path).read_bytes())
    except ValueError as exc:
        raise IdentityError(f"{path} is not a PEM certificate signing request") from exc


def load_certificates(path: Path) -> list[x509.Certificate]:
    """All certificates in a PEM file (leaf first for a chain)."""
    try:
        return x509.load_pem_x509_certificates(Path(path).read_bytes())
    except ValueError as exc:
        raise IdentityError(f"{path} holds no PEM certificate") from exc


def common_name(name: x509.Name) -> str:
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not attrs:
        return ""
    value = attrs[0].value
    return value.decode() if isinstance(value, bytes) else value


@dataclass(frozen=True, slots=True)
class CertInfo:
    """What a technician needs to know about a certificate, without any key material."""

    subject_cn: str
    issuer_cn: str
    serial: int
    not_before: datetime
    not_after: datetime
    fingerprint_sha256: str

    def remaining_days(self, now: datetime | None = None) -> float:
        now = now or datetime.now(UTC)
        return (self.not_after - now).total_seconds() / 86400

    def is_valid_at(self, now: datetime | None = None) -> bool:
        now = now or datetime.now(UTC)
        return self.not_before <= now <= self.not_after


def cert_info(cert: x509.Certificate) -> CertInfo:
    return CertInfo(
        subject_cn=common_name(cert.subject),
        issuer_cn=common_name(cert.issuer),
        serial=cert.serial_number,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        fingerprint_sha256=cert.fingerprint(hashes.SHA256()).hex(),
    )


def read_cert_expiry(path: Path) -> CertInfo:
    """Expiry and identity of the first (leaf) certificate in ``path``."""
    return cert_info(load_certificates(path)[0])


def key_matches_cert(key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> bool:
    """True when ``cert`` was issued for ``key`` (compares public keys, never prints them)."""
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return key.public_key().public_bytes(*fmt) == cert.public_key().public_bytes(*fmt)
