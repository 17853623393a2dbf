"""The uplinks as capabilities: ``[uplinks.mqtt]`` and ``[uplinks.sensorthings_http]``.

Each builds its uplink lazily, so reading a configuration imports neither paho nor httpx.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge.plugins import Capability
from edge.seams import Uplink
from edge.sensorthings.settings import SensorThingsHttpSettings
from edge.tls import unreadable
from edge.uplinks.mqtt_settings import MqttSettings

if TYPE_CHECKING:
    from edge.config import GatewayConfig


class MqttCapability(Capability[MqttSettings]):
    key = "uplinks.mqtt"
    model = MqttSettings

    def uplinks(self, settings: MqttSettings, config: GatewayConfig) -> list[Uplink]:
        from edge.uplinks.mqtt import MqttUplink

        return [MqttUplink(settings, config.gateway.id)]

    def preflight(self, settings: MqttSettings, config: GatewayConfig) -> list[str]:
        problems = settings.tls.file_problems(f"{self.key}.tls") if settings.tls else []
        if settings.password_file is not None and (why := unreadable(settings.password_file)):
            problems.append(f"{self.key}.password_file = {str(settings.password_file)!r}: {why}")
        return problems


class SensorThingsHttpCapability(Capability[SensorThingsHttpSettings]):
    key = "uplinks.sensorthings_http"
    model = SensorThingsHttpSettings

    def uplinks(self, settings: SensorThingsHttpSettings, config: GatewayConfig) -> list[Uplink]:
        from edge.sensorthings import GeoPoint
        from edge.uplinks import RequestUplinkRunner
        from edge.uplinks.sensorthings_http import SensorThingsHttpUplink

        gw = config.gateway
        location = (
            GeoPoint(gw.longitude, gw.latitude)
            if gw.latitude is not None and gw.longitude is not None
            else None
        )
        uplink = SensorThingsHttpUplink(settings, gw.id, gw.data_dir, location=location)
        return [RequestUplinkRunner("sensorthings_http", uplink, settings.batch_size)]


MQTT = MqttCapability()
SENSORTHINGS_HTTP = SensorThingsHttpCapability()
