"""A small certificate authority for labs, tests and cities that run their own.

Production may use any CA: a gateway only needs its certificate chain. This one keeps
everything in one directory::

    ca.key        0600  CA private key
    ca.crt        0644  self-signed CA certificate (the trust anchor for brokers and twins)
    crl.pem       0644  certificate revocation list, rewritten on every revoke / `ca crl`
    index.json    0644  every certificate issued: serial, CN, role, validity, status
    issued/       0644  copies of issued certificates, named by hex serial

Roles decide the certificate's extended key usage and which CNs are allowed:
``gateway`` (client auth, CN = gateway id), ``receiver`` (client auth, CN starts with
``receiver-``; the broker ACL grants receivers read access) and ``server`` (server auth,
with DNS / IP subject alternative names for a broker or twin).
"""

from __future__ import annotations

import ipaddress
import json
import logging
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from provisioning.identity import (
    ORGANIZATION,
    RECEIVER_PREFIX,
    IdentityError,
    build_csr,
    check_gateway_id,
    common_name,
    generate_key,
    private_key_pem,
)
from provisioning.secrets import ensure_private_dir, write_public, write_secret

Role = Literal["gateway", "receiver", "server"]
ROLES: tuple[str, ...] = ("gateway", "receiver", "server")
log = logging.getLogger("provisioning.ca")
CLOCK_SKEW = timedelta(minutes=5)  # backdate not_before: a gateway's clock may lag a little
DEFAULT_CRL_DAYS = 30


class CAError(ValueError):
    """A CA operation that cannot be done; the message says what to do."""


@dataclass(slots=True)
class IssuedCert:
    """One row of the CA's index (no key material, safe to export)."""

    serial: str  # hex
    common_name: str
    role: str
    not_before: str  # ISO 8601 UTC
    not_after: str
    fingerprint_sha256: str
    status: str = "valid"  # valid | revoked
    revoked_at: str | None = None
    reason: str | None = None

    def expired(self, now: datetime | None = None) -> bool:
        now = now or datetime.now(UTC)
        return datetime.fromisoformat(self.not_after) < now

    def state(self, now: datetime | None = None) -> str:
        """``revoked``, ``expired`` or ``valid``."""
        if self.status == "revoked":
            return "revoked"
        return "expired" if self.expired(now) else "valid"


MIN_SERIAL_PREFIX = 8


def _serial_matches(serial: str, selector: str) -> bool:
    """The full hex serial, or a prefix of at least 8 digits as shown shortened elsewhere
    (``42a53423…`` in the inventory CSV); ``0x`` and a trailing ellipsis are ignored."""
    wanted = selector.strip().lower().removeprefix("0x").rstrip("…").rstrip(".")
    if wanted == serial:
        return True
    return len(wanted) >= MIN_SERIAL_PREFIX and serial.startswith(wanted)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")


class CertificateAuthority:
    """A CA directory on disk; create it with :meth:`create`, open it with :meth:`open`."""

    def __init__(self, directory: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate):
        self.directory = Path(directory)
        self._key = key
        self.cert = cert

    # --- files -----------------------------------------------------------------------
    @property
    def key_path(self) -> Path:
        return self.directory / "ca.key"

    @property
    def cert_path(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def crl_path(self) -> Path:
        return self.directory / "crl.pem"

    @property
    def index_path(self) -> Path:
        return self.directory / "index.json"

    # --- lifecycle -------------------------------------------------------------------
    @classmethod
    def create(
        cls, directory: Path, name: str = "duet-edge lab CA", days: int = 3650,
        passphrase: bytes | None = None,
    ) -> CertificateAuthority:
        """A new CA; with ``passphrase`` the key file is encrypted (recommended outside labs)."""
        directory = ensure_private_dir(Path(directory))
        if (directory / "ca.key").exists():
            raise CAError(f"{directory} already holds a CA; use it, or pick another directory")
        key = generate_key()
        now = datetime.now(UTC)
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
                x509.NameAttribute(NameOID.COMMON_NAME, name),
            ]
        )
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(now + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(passphrase) if passphrase
            else serialization.NoEncryption()
        )
        write_secret(directory / "ca.key", key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption))
        write_public(directory / "ca.crt", cert.public_bytes(serialization.Encoding.PEM))
        ca = cls(directory, key, cert)
        ca._write_index([])
        ca.write_crl()
        return ca

    @classmethod
    def open(cls, directory: Path, passphrase: bytes | None = None) -> CertificateAuthority:
        directory = Path(directory)
        key_path, cert_path = directory / "ca.key", directory / "ca.crt"
        if not key_path.exists() or not cert_path.exists():
            raise CAError(
                f"{directory} is not a CA directory (run `duet-edge provision ca create` first)"
            )
        try:
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=passphrase)
        except TypeError:
            raise CAError(f"{key_path} is encrypted: give its passphrase "
                          "(--passphrase-env VAR)") from None
        except ValueError:
            raise CAError(f"cannot decrypt {key_path}: wrong passphrase?") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CAError(f"{key_path}: expected an ECDSA key")
        return cls(directory, key, x509.load_pem_x509_certificate(cert_path.read_bytes()))

    # --- index -----------------------------------------------------------------------
    def issued(self) -> list[IssuedCert]:
        return self.read_issued(self.directory)

    @staticmethod
    def read_issued(directory: Path) -> list[IssuedCert]:
        """The index alone (no key needed): for listings and inventories."""
        index = Path(directory) / "index.json"
        if not index.exists():
            if not (Path(directory) / "ca.crt").exists():
                raise CAError(f"{directory} is not a CA directory")
            return []
        rows = json.loads(index.read_text(encoding="utf-8"))
        return [IssuedCert(**row) for row in rows]

    def _write_index(self, rows: list[IssuedCert]) -> None:
        text = json.dumps([asdict(r) for r in rows], indent=2) + "\n"
        write_public(self.index_path, text.encode())

    # --- issuing ---------------------------------------------------------------------
    def sign_csr(
        self,
        csr: x509.CertificateSigningRequest,
        role: Role = "gateway",
        days: int = 365,
        *,
        hosts: tuple[str, ...] = (),
        not_before: datetime | None = None,
        not_after: datetime | None = None,
    ) -> x509.Certificate:
        """Issue a certificate for ``csr`` after checking its signature and CN against ``role``.

        ``not_before``/``not_after`` override the validity window (tests use it to make an
        already-expired certificate).
        """
        if not csr.is_signature_valid:
            raise CAError("the CSR's signature is invalid (corrupted or tampered); make a new one")
        cn = common_name(csr.subject)
        _check_cn(cn, role)
        if role == "server" and not hosts:
            hosts = (cn,)
        now = datetime.now(UTC)
        start = not_before or now - CLOCK_SKEW
        end = not_after or now + timedelta(days=days)
        if end <= start:
            raise CAError("the certificate would expire before it becomes valid")
        eku = ExtendedKeyUsageOID
        usage = eku.SERVER_AUTH if role == "server" else eku.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(csr.subject)
            .issuer_name(self.cert.subject)
            .public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
        )
        if hosts:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False
            )
        cert = builder.sign(self._key, hashes.SHA256())
        self._record(cert, role)
        log.info("certificate issued", extra={
            "cn": cn, "role": role, "serial": format(cert.serial_number, "x"),
            "not_after": _iso(end)})
        return cert

    def issue_key_and_cert(
        self, common_name_: str, role: Role, days: int = 365, *, hosts: tuple[str, ...] = (),
        not_before: datetime | None = None, not_after: datetime | None = None,
    ) -> tuple[bytes, x509.Certificate]:
        """Generate a key here and certify it: for lab brokers, receivers and tests only.

        Gateways create their own key with ``provision init``; this returns the key PEM for
        the caller to write with :func:`provisioning.secrets.write_secret`.
        """
        key = generate_key()
        cert = self.sign_csr(
            build_csr(key, common_name_), role, days, hosts=hosts,
            not_before=not_before, not_after=not_after,
        )
        return private_key_pem(key), cert

    def _record(self, cert: x509.Certificate, role: str) -> None:
        rows = self.issued()
        rows.append(
            IssuedCert(
                serial=format(cert.serial_number, "x"),
                common_name=common_name(cert.subject),
                role=role,
                not_before=_iso(cert.not_valid_before_utc),
                not_after=_iso(cert.not_valid_after_utc),
                fingerprint_sha256=cert.fingerprint(hashes.SHA256()).hex(),
            )
        )
        self._write_index(rows)
        issued = self.directory / "issued" / f"{cert.serial_number:x}.crt"
        write_public(issued, cert.public_bytes(serialization.Encoding.PEM))

    def chain_pem(self, cert: x509.Certificate) -> bytes:
        """Leaf + CA certificate, the chain a gateway presents."""
        enc = serialization.Encoding.PEM
        return cert.public_bytes(enc) + self.cert.public_bytes(enc)

    # --- revocation ------------------------------------------------------------------
    def revoke(self, selector: str, reason: str = "unspecified") -> list[IssuedCert]:
        """Revoke by hex serial, or every valid certificate of a CN; rewrite the CRL.

        Returns the rows revoked. The broker must then reload the CRL (restart or SIGHUP).
        """
        rows = self.issued()
        hits = [r for r in rows if r.status == "valid" and r.common_name == selector]
        if not hits:
            hits = [r for r in rows if r.status == "valid" and _serial_matches(r.serial, selector)]
        if len({r.serial for r in hits}) > 1 and all(r.common_name != selector for r in hits):
            raise CAError(f"serial {selector!r} is ambiguous ({len(hits)} valid certificates "
                          "start with it); give more digits (`provision ca list`)")
        if not hits:
            raise CAError(
                f"no valid certificate with serial or CN {selector!r} (see `provision ca list`)"
            )
        now = _iso(datetime.now(UTC))
        for row in hits:
            row.status, row.revoked_at, row.reason = "revoked", now, reason
        self._write_index(rows)
        self.write_crl()
        for row in hits:
            log.warning("certificate revoked", extra={
                "cn": row.common_name, "serial": row.serial, "reason": reason})
        return hits

    def build_crl(self, days: int = DEFAULT_CRL_DAYS) -> x509.CertificateRevocationList:
        now = datetime.now(UTC)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject)
            .last_update(now - CLOCK_SKEW)
            .next_update(now + timedelta(days=days))
        )
        for row in self.issued():
            if row.status != "revoked" or row.revoked_at is None:
                continue
            revoked = (
                x509.RevokedCertificateBuilder()
                .serial_number(int(row.serial, 16))
                .revocation_date(datetime.fromisoformat(row.revoked_at))
                .build()
            )
            builder = builder.add_revoked_certificate(revoked)
        return builder.sign(self._key, hashes.SHA256())

    def write_crl(self, days: int = DEFAULT_CRL_DAYS) -> Path:
        """(Re)write ``crl.pem``. Run it again before ``days`` pass, or brokers refuse everyone."""
        crl = self.build_crl(days)
        return write_public(self.crl_path, crl.public_bytes(serialization.Encoding.PEM))


def _check_cn(cn: str, role: str) -> None:
    if role not in ROLES:
        raise CAError(f"role {role!r} is not one of {', '.join(ROLES)}")
    if not cn:
        raise CAError("the CSR has no common name (CN)")
    if role == "gateway":
        try:
            check_gateway_id(cn)
        except IdentityError as exc:
            raise CAError(str(exc)) from None
    elif role == "receiver" and not cn.startswith(RECEIVER_PREFIX):
        raise CAError(f"a receiver's CN must start with {RECEIVER_PREFIX!r}, got {cn!r}")


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)
