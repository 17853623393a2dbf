"""Signed config and calibration bundles (Ed25519): sign, verify, apply atomically.

A bundle is one JSON document::

    {"format": "duet-bundle/1",
     "manifest": {"kind": "config", "version": 7, "gateway_id": "gw-1" | "*",
                  "created": "2026-11-25T12:00:00+00:00",
                  "files": {"gateway.toml": {"sha256": "…", "size": 812}}},
     "files": {"gateway.toml": "<base64>"},
     "signature": {"alg": "Ed25519", "key_id": "…", "value": "<base64>"}}

The signature covers the canonical JSON of the manifest (sorted keys, no spaces), and
the manifest pins every file by SHA-256, so nothing in the bundle can change unnoticed.

On the gateway, :class:`BundleStore` keeps each applied version in its own directory and
points ``<root>/<kind>/current`` at the active one with an atomic symlink swap::

    <root>/config/v6/gateway.toml
    <root>/config/v7/gateway.toml
    <root>/config/current -> v7

Nothing is applied unless the signature verifies against the configured trust anchor,
the bundle is addressed to this gateway, its version is newer than the active one (no
rollback to an old, possibly vulnerable config) and the content validator accepts it. On
any failure the active version stays untouched.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from provisioning.secrets import write_public, write_secret

log = logging.getLogger("provisioning.bundles")
FORMAT = "duet-bundle/1"
Kind = Literal["config", "calibration"]
KINDS: tuple[str, ...] = ("config", "calibration")
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
MAX_BUNDLE_BYTES = 16 * 1024 * 1024
CONFIG_FILE = "gateway.toml"  # the gateway config inside a config bundle

Validator = Callable[[Path], None]
"""Checks a staged bundle directory; raises (any exception) to refuse it."""


class BundleError(ValueError):
    """A bundle that must not be applied; the message says why."""


# --- keys ------------------------------------------------------------------------------
def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_signing_key(private_path: Path, public_path: Path) -> str:
    """Write a new Ed25519 signing key (0600) and its public key (the trust anchor)."""
    key = Ed25519PrivateKey.generate()
    write_secret(
        private_path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    public = key.public_key()
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    write_public(public_path, public.public_bytes(serialization.Encoding.PEM, spki))
    return key_id(public)


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise BundleError(f"{path}: not an Ed25519 private key")
    return key


def load_trust_anchors(path: Path) -> dict[str, Ed25519PublicKey]:
    """All Ed25519 public keys in a PEM file, by key id (several allow key rotation)."""
    text = Path(path).read_text(encoding="utf-8")
    blocks = re.findall(r"-----BEGIN PUBLIC KEY-----.*?-----END PUBLIC KEY-----", text, re.S)
    anchors: dict[str, Ed25519PublicKey] = {}
    for block in blocks:
        key = serialization.load_pem_public_key(block.encode())
        if isinstance(key, Ed25519PublicKey):
            anchors[key_id(key)] = key
    if not anchors:
        raise BundleError(f"{path} holds no Ed25519 public key; cannot verify bundles")
    return anchors


# --- signing and verifying -------------------------------------------------------------
def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def sign_bundle(
    kind: Kind,
    version: int,
    files: dict[str, bytes],
    signing_key: Ed25519PrivateKey,
    gateway_id: str = "*",
    created: datetime | None = None,
) -> bytes:
    """A signed bundle holding ``files`` (name → content)."""
    if kind not in KINDS:
        raise BundleError(f"kind {kind!r} is not one of {', '.join(KINDS)}")
    if version < 1:
        raise BundleError("version must be a positive integer")
    for name in files:
        _check_name(name)
    manifest = {
        "kind": kind,
        "version": version,
        "gateway_id": gateway_id,
        "created": (created or datetime.now(UTC)).isoformat(timespec="seconds"),
        "files": {
            name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
            for name, data in sorted(files.items())
        },
    }
    signature = signing_key.sign(_canonical(manifest))
    doc = {
        "format": FORMAT,
        "manifest": manifest,
        "files": {n: base64.b64encode(d).decode() for n, d in sorted(files.items())},
        "signature": {
            "alg": "Ed25519",
            "key_id": key_id(signing_key.public_key()),
            "value": base64.b64encode(signature).decode(),
        },
    }
    return json.dumps(doc, indent=1, sort_keys=True).encode()


@dataclass(frozen=True, slots=True)
class VerifiedBundle:
    kind: str
    version: int
    gateway_id: str
    created: str
    key_id: str
    files: dict[str, bytes]


def verify_bundle(data: bytes, anchors: dict[str, Ed25519PublicKey]) -> VerifiedBundle:
    """Parse and verify a bundle; raise :class:`BundleError` naming the first problem.

    Untrusted input: every shape is checked before use, and nothing else than
    :class:`BundleError` escapes (property-tested with arbitrary mutations).
    """
    if len(data) > MAX_BUNDLE_BYTES:
        raise BundleError(f"bundle is {len(data)} bytes, over the {MAX_BUNDLE_BYTES} limit")
    manifest, sig, encoded = _parse_envelope(data)
    anchor = anchors.get(sig["key_id"])
    if anchor is None:
        raise BundleError(
            f"signed by key {sig['key_id']!r}, which is not in the trust anchor "
            f"(trusted: {', '.join(sorted(anchors))})"
        )
    try:
        anchor.verify(base64.b64decode(sig["value"], validate=True), _canonical(manifest))
    except (InvalidSignature, ValueError) as exc:
        raise BundleError("signature does not verify: the bundle was tampered with") from exc
    try:
        files = _checked_files(manifest, encoded)
        return VerifiedBundle(
            kind=_typed(manifest, "kind", str),
            version=_typed(manifest, "version", int),
            gateway_id=_typed(manifest, "gateway_id", str),
            created=_typed(manifest, "created", str),
            key_id=sig["key_id"],
            files=files,
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, BundleError):
            raise
        raise BundleError(f"malformed signed manifest: {type(exc).__name__}: {exc}") from None


def _parse_envelope(data: bytes) -> tuple[dict[str, Any], dict[str, str], dict[str, Any]]:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"not a duet bundle (not JSON: {exc})") from None
    if not isinstance(doc, dict):
        raise BundleError("not a duet bundle (top level is not an object)")
    if doc.get("format") != FORMAT:
        raise BundleError(f"unsupported bundle format {doc.get('format')!r}; expected {FORMAT}")
    manifest, sig, encoded = doc.get("manifest"), doc.get("signature"), doc.get("files")
    if not (isinstance(manifest, dict) and isinstance(sig, dict) and isinstance(encoded, dict)):
        raise BundleError("not a duet bundle (manifest, signature and files must be objects)")
    if sig.get("alg") != "Ed25519":
        raise BundleError(f"unsupported signature algorithm {sig.get('alg')!r}")
    if not isinstance(sig.get("key_id"), str) or not isinstance(sig.get("value"), str):
        raise BundleError("signature key_id and value must be strings")
    return manifest, {"key_id": sig["key_id"], "value": sig["value"]}, encoded


def _typed(obj: dict[str, Any], key: str, kind: type) -> Any:
    value = obj[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise BundleError(f"manifest {key} must be a {kind.__name__}")
    return value


def _checked_files(manifest: dict[str, Any], encoded: dict[str, Any]) -> dict[str, bytes]:
    listed = manifest.get("files")
    if not isinstance(listed, dict) or set(listed) != set(encoded):
        raise BundleError("the files in the bundle differ from the signed manifest")
    files: dict[str, bytes] = {}
    for name, meta in listed.items():
        _check_name(name)
        if not isinstance(encoded[name], str):
            raise BundleError(f"file {name!r} is not base64 text")
        content = base64.b64decode(encoded[name], validate=True)
        if hashlib.sha256(content).hexdigest() != meta["sha256"]:
            raise BundleError(f"file {name!r} does not match its signed SHA-256")
        files[name] = content
    return files


def _check_name(name: str) -> None:
    if not _FILE_NAME.match(name):
        raise BundleError(f"file name {name!r} is not allowed (plain names only, no paths)")


# --- applying on the gateway -------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Applied:
    kind: str
    version: int
    path: Path
    previous: int | None


class BundleStore:
    """Versioned bundle directories under ``root`` with an atomic ``current`` pointer."""

    def __init__(self, root: Path, gateway_id: str, anchors: dict[str, Ed25519PublicKey],
                 keep: int = 3):
        self.root = Path(root)
        self.gateway_id = gateway_id
        self.anchors = anchors
        self.keep = max(keep, 2)

    def current_version(self, kind: str) -> int | None:
        link = self.root / kind / "current"
        if not link.is_symlink():
            return None
        return int(os.readlink(link).removeprefix("v"))

    def current_path(self, kind: str) -> Path | None:
        version = self.current_version(kind)
        return None if version is None else self.root / kind / f"v{version}"

    def apply(
        self, data: bytes, kind: Kind, validator: Validator | None = None,
        *, allow_downgrade: bool = False,
    ) -> Applied:
        """Verify and activate a bundle; on any failure the active version is unchanged."""
        try:
            applied = self._apply(data, kind, validator, allow_downgrade)
        except BundleError as exc:
            log.warning("bundle refused, previous version kept", extra={
                "kind": kind, "active_version": self.current_version(kind), "reason": str(exc)})
            raise
        log.info("bundle applied", extra={
            "kind": kind, "version": applied.version, "previous_version": applied.previous})
        return applied

    def _apply(
        self, data: bytes, kind: Kind, validator: Validator | None, allow_downgrade: bool
    ) -> Applied:
        bundle = verify_bundle(data, self.anchors)
        if bundle.kind != kind:
            raise BundleError(f"expected a {kind} bundle, got a {bundle.kind} bundle")
        if bundle.gateway_id not in ("*", self.gateway_id):
            raise BundleError(
                f"bundle is addressed to {bundle.gateway_id!r}, this gateway is {self.gateway_id!r}"
            )
        previous = self.current_version(kind)
        if previous is not None and bundle.version <= previous and not allow_downgrade:
            raise BundleError(
                f"bundle version {bundle.version} is not newer than the active version {previous}"
            )
        kind_dir = self.root / kind
        kind_dir.mkdir(parents=True, exist_ok=True)
        staging = kind_dir / f".staging-v{bundle.version}-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            _write_tree(staging, bundle.files, data)
            if validator is not None:
                try:
                    validator(staging)
                except Exception as exc:
                    raise BundleError(f"bundle content refused: {exc}") from exc
            target = kind_dir / f"v{bundle.version}"
            if target.exists():
                shutil.rmtree(target)
            os.rename(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        _swap_symlink(kind_dir / "current", target.name)
        self._prune(kind_dir, keep_names={target.name, f"v{previous}"})
        return Applied(kind, bundle.version, target, previous)

    def rollback(self, kind: str) -> int:
        """Point ``current`` back at the newest version older than the active one."""
        active = self.current_version(kind)
        older = [v for v in self.versions(kind) if active is None or v < active]
        if not older:
            raise BundleError(f"no earlier {kind} version to roll back to")
        _swap_symlink(self.root / kind / "current", f"v{max(older)}")
        return max(older)

    def versions(self, kind: str) -> list[int]:
        kind_dir = self.root / kind
        if not kind_dir.is_dir():
            return []
        return sorted(
            int(p.name[1:]) for p in kind_dir.iterdir()
            if p.is_dir() and not p.is_symlink() and re.fullmatch(r"v\d+", p.name)
        )

    def _prune(self, kind_dir: Path, keep_names: Iterable[str]) -> None:
        versions = self.versions(kind_dir.name)
        keep = set(keep_names) | {f"v{v}" for v in versions[-self.keep:]}
        for v in versions:
            if f"v{v}" not in keep:
                shutil.rmtree(kind_dir / f"v{v}", ignore_errors=True)


def _write_tree(directory: Path, files: dict[str, bytes], bundle: bytes) -> None:
    directory.mkdir(parents=True)
    for name, content in files.items():
        path = directory / name
        with open(path, "wb") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
    (directory / ".bundle.json").write_bytes(bundle)  # kept for audit / re-verification
    _fsync_dir(directory)


def _swap_symlink(link: Path, target_name: str) -> None:
    tmp = link.with_name(f".{link.name}.tmp-{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(target_name, tmp)
    os.replace(tmp, link)
    _fsync_dir(link.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def config_validator(file_name: str = CONFIG_FILE) -> Validator:
    """A validator that parses ``file_name`` with the gateway's own config schema."""

    def validate(staged: Path) -> None:
        from edge.config import parse_config

        path = staged / file_name
        if not path.exists():
            raise BundleError(f"a config bundle must contain {file_name}")
        parse_config(path.read_text(encoding="utf-8"), source=file_name)

    return validate
