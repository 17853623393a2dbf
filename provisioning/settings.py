"""The ``[security]`` table of the gateway config (a capability: provisioning/capability.py).

    [security]
    identity_dir = "/etc/duet-edge/identity"

    [security.bundles]
    trust_anchor = "/etc/duet-edge/bundle-trust.pem"
    store_dir = "/var/lib/duet-edge/bundles"
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from provisioning.bundles import Applied


class BundleSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    trust_anchor: Path = Field(
        description="PEM file with the Ed25519 public key(s) bundles must be signed with "
        "(several keys allow rotation). Nothing is applied without a valid signature.")
    store_dir: Path = Field(
        Path("/var/lib/duet-edge/bundles"),
        description="Versioned bundle directories; <store_dir>/<kind>/current is the active one.")
    keep: int = Field(3, ge=2, le=50, description="Versions kept per kind (for rollback).")


class SecuritySettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    identity_dir: Path = Field(
        Path("/etc/duet-edge/identity"),
        description="Gateway key (0600), CSR, certificate chain and CA (provision init).")
    bundles: BundleSettings | None = Field(
        None, description="Signed config / calibration bundles; unset: bundles are refused.")


def apply_bundle_message(payload: bytes, settings: SecuritySettings, gateway_id: str) -> Applied:
    """Verify and apply a bundle received e.g. on ``duet/v1/<gateway id>/config/bundle``.

    The kind comes from the signed manifest; config bundles are validated with the gateway's
    own schema. Raises :class:`BundleError` (previous version kept) on any problem.
    """
    # cryptography is imported only when a bundle actually arrives (config stays light)
    from provisioning.bundles import BundleError, BundleStore, config_validator, load_trust_anchors

    if settings.bundles is None:
        raise BundleError("no [security.bundles] trust anchor configured: bundles are refused")
    b = settings.bundles
    store = BundleStore(b.store_dir, gateway_id, load_trust_anchors(b.trust_anchor), keep=b.keep)
    try:
        kind = json.loads(payload)["manifest"]["kind"]
    except (ValueError, KeyError, TypeError):
        raise BundleError("not a duet bundle") from None
    if kind not in ("config", "calibration"):
        raise BundleError(f"unknown bundle kind {kind!r}")
    validator = config_validator() if kind == "config" else None
    return store.apply(payload, kind, validator)
