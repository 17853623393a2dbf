"""Writing secret material safely: owner-only files created atomically, never logged.

Every private key, token and CA key written by provisioning goes through
:func:`write_secret`, so there is exactly one place that decides file modes.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

SECRET_MODE = 0o600
SECRET_DIR_MODE = 0o700


class SecretExistsError(FileExistsError):
    """Refusing to overwrite an existing secret (an identity must be replaced on purpose)."""


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) with owner-only access for the last component."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, SECRET_DIR_MODE)
    return path


def write_secret(path: Path, data: bytes, *, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` with mode 0600, atomically.

    The temporary file is created 0600 from the start (``O_EXCL``), so the secret is never
    readable by others, not even for an instant. Without ``overwrite`` an existing file is
    an error: replacing a key must be a deliberate rotation.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise SecretExistsError(f"{path} already exists; refusing to overwrite a secret")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, SECRET_MODE)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, SECRET_MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return path


def write_public(path: Path, data: bytes) -> Path:
    """Write non-secret material (certificates, CSRs, configs) atomically, mode 0644."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path


def is_private(path: Path) -> bool:
    """True when no one but the owner can read or write ``path``."""
    return (os.stat(path).st_mode & 0o077) == 0
