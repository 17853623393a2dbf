"""``[security]`` as a gateway capability: signed config/calibration bundles from the twin."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from edge.plugins import Capability
from edge.seams import BundleOutcome, BundleSink
from provisioning.settings import SecuritySettings

if TYPE_CHECKING:
    from edge.config import GatewayConfig


class SecurityCapability(Capability[SecuritySettings]):
    key = "security"
    model = SecuritySettings
    requires = ("cryptography",)
    extra = "provisioning"

    def bundle_sink(self, settings: SecuritySettings, config: GatewayConfig) -> BundleSink | None:
        if settings.bundles is None:
            return None
        gateway_id = config.gateway.id

        def apply(payload: bytes) -> BundleOutcome:
            from provisioning.bundles import BundleError
            from provisioning.settings import apply_bundle_message

            try:
                applied = apply_bundle_message(payload, settings, gateway_id)
            except BundleError as exc:
                return BundleOutcome(False, {"reason": str(exc)})
            return BundleOutcome(
                True,
                {
                    "kind": applied.kind,
                    "version": str(applied.version),
                    "previous": "" if applied.previous is None else str(applied.previous),
                },
            )

        return apply

    def active_config(self, settings: SecuritySettings, config: GatewayConfig) -> Path | None:
        """With signed bundles, the newest verified config bundle wins over the boot file."""
        if settings.bundles is None:
            return None
        current = settings.bundles.store_dir / "config" / "current" / "gateway.toml"
        return current if current.exists() else None


CAPABILITY = SecurityCapability()
