"""Facts about the machine for the technician page: clock sync, certificates, versions, secrets.

Everything here is read-only and cheap; certificate files are parsed once per call of
:func:`certificates` (the server caches the answer).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import datetime as dt
import functools
import os
import platform
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from edge.config import GatewayConfig
from edge.quality.settings import QualitySettings

_TIME_ERROR = 5  # adjtimex(2): clock not synchronised
_SECRET_FILE_FIELDS = ("password_file", "token_file")
_SECRET_ENV_FIELDS = ("password_env", "token_env")
_CERT_FIELDS = ("cert_file", "ca_file")


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def clock_sync() -> str:
    """'synced', 'unsynced' or 'unknown', from the kernel's adjtimex(2) clock state."""
    try:
        buf = ctypes.create_string_buffer(512)  # struct timex, modes = 0: read only
        state = int(_libc().adjtimex(buf))
    except (OSError, AttributeError):
        return "unknown"
    if state < 0:
        return "unknown"
    return "unsynced" if state == _TIME_ERROR else "synced"


def walk_settings(model: Any, prefix: str = "") -> Iterator[tuple[str, str, Any]]:
    """(dotted path, field name, value) for every field of a pydantic settings tree."""
    if isinstance(model, GatewayConfig):  # capability tables are not fields: walk every table
        for key, table in model.tables().items():
            yield from walk_settings(table, key)
    elif isinstance(model, BaseModel):
        for name in type(model).model_fields:
            value = getattr(model, name)
            path = f"{prefix}.{name}" if prefix else name
            yield path, name, value
            yield from walk_settings(value, path)
    elif isinstance(model, dict):
        for key, value in model.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            yield path, str(key), value
            yield from walk_settings(value, path)
    elif isinstance(model, list | tuple):
        for i, value in enumerate(model):
            yield from walk_settings(value, f"{prefix}[{i}]")


def secret_values(config: Any, extra: list[str | None] | None = None) -> list[str]:
    """Every secret the configuration points at (file contents, environment values).

    The server strips these from every response as a last line of defence; the pages never
    render them in the first place.
    """
    found: set[str] = {s for s in extra or [] if s}
    for _path, name, value in walk_settings(config):
        if name in _SECRET_FILE_FIELDS and isinstance(value, str | Path):
            try:
                text = Path(value).read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError):
                continue
            if text:
                found.add(text)
        elif name in _SECRET_ENV_FIELDS and isinstance(value, str) and os.environ.get(value):
            found.add(os.environ[value].strip())
    return sorted((s for s in found if len(s) >= 4), key=len, reverse=True)


def certificates(config: Any, now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """Subject and expiry of every certificate file in the configuration (never key files)."""
    now = now or dt.datetime.now(dt.UTC)
    out: list[dict[str, Any]] = []
    for path, name, value in walk_settings(config):
        if name not in _CERT_FIELDS or not isinstance(value, str | Path):
            continue
        out.append({"setting": path, **_describe_cert(Path(value), now)})
    return out


def _describe_cert(path: Path, now: dt.datetime) -> dict[str, Any]:
    try:
        from cryptography import x509
        from cryptography.x509.oid import NameOID
    except ImportError:
        return {"error": "cryptography not installed"}
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        return {"error": type(exc).__name__}
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    expiry = cert.not_valid_after_utc
    return {
        "subject_cn": str(names[0].value) if names else "",
        "not_after": expiry.isoformat(),
        "days_left": round((expiry - now).total_seconds() / 86400, 1),
    }


@functools.cache
def package_version(name: str = "duet-edge") -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


def model_artefacts(config: Any) -> list[dict[str, str]]:
    """Calibration and anomaly-model artefacts the configuration points at."""
    out: list[dict[str, str]] = []
    for path, name, value in walk_settings(config):
        if name in ("artefact_dir", "model_dir") and isinstance(value, str | Path):
            folder = Path(value)
            files = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
            out.append({"setting": path, "files": ", ".join(files[:20])})
    quality = config.settings(QualitySettings) if isinstance(config, GatewayConfig) else None
    if quality is not None and quality.ml.model_dir is None:
        shipped = Path(__file__).resolve().parent.parent / "quality" / "models"
        names = sorted(p.name for p in shipped.iterdir()) if shipped.is_dir() else []
        out.append({"setting": "quality.ml.model_dir (shipped)", "files": ", ".join(names)})
    return out


def runtime_versions() -> dict[str, str]:
    return {
        "duet-edge": package_version(),
        "python": platform.python_version(),
        "aiohttp": package_version("aiohttp"),
    }
