"""TLS settings and client contexts for MQTT connections (gateway uplink and twin receiver)."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class TlsSettings(BaseModel):
    """Client TLS: the CA that signed the broker, and our own certificate and key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = Field(False, description="Skip hostname verification (lab use only).")

    def file_problems(self, key: str) -> list[str]:
        """One line per TLS file this process cannot read (checked before connecting)."""
        files = {"ca_file": self.ca_file, "cert_file": self.cert_file, "key_file": self.key_file}
        return [
            f"{key}.{name} = {str(path)!r}: {problem}"
            for name, path in files.items()
            if path is not None and (problem := unreadable(path))
        ]


def unreadable(path: Path) -> str:
    """Why this process cannot read ``path`` (with the fix), or "" when it can."""
    if not path.exists():
        return "the file does not exist (check the path)"
    if not path.is_file():
        return "not a file"
    if not os.access(path, os.R_OK):
        return "not readable by this user (check the file's owner and mode)"
    return ""


def tls_context(tls: TlsSettings) -> ssl.SSLContext:
    """Client TLS context: verify the broker, present our own certificate."""
    ctx = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca_file) if tls.ca_file else None
    )
    if tls.cert_file:
        ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file) if tls.key_file else None)
    if tls.insecure:
        ctx.check_hostname = False
    return ctx


def read_secret(path: Path | None) -> str | None:
    """The first line of a secret file (a password), or None when no file is configured."""
    if path is None:
        return None
    with open(path, encoding="utf-8") as fh:
        return fh.read().strip()
