"""``[web]`` as a gateway capability: the status page, /healthz and /metrics as a service."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge.plugins import Capability, Service
from edge.web.settings import WebSettings

if TYPE_CHECKING:
    from edge.config import GatewayConfig
    from edge.seams import GatewayHandle


class WebCapability(Capability[WebSettings]):
    key = "web"
    model = WebSettings
    requires = ("aiohttp", "prometheus_client")
    extra = "web"

    def services(self, settings: WebSettings, config: GatewayConfig) -> list[Service]:
        async def serve(gateway: GatewayHandle) -> None:
            from edge.web.server import StatusServer

            await StatusServer(gateway, settings).serve_forever()

        return [serve]


CAPABILITY = WebCapability()
