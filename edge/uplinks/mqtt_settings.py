"""Settings of the MQTT uplink (``[uplinks.mqtt]``), apart from the uplink so that reading a
config file does not import the MQTT client."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from edge.config import Strict
from edge.tls import TlsSettings


class MqttSettings(Strict):
    """``[uplinks.mqtt]``: the broker, credentials and batching of the MQTT uplink."""

    host: str = "127.0.0.1"
    port: int = Field(1883, gt=0, lt=65536)
    client_id: str | None = None
    username: str | None = None
    password_file: Path | None = Field(
        None, description="File holding the password (never inline)."
    )
    tls: TlsSettings | None = None
    mode: Literal["compact", "sensorthings"] = "compact"
    topic_prefix: str = "duet/v1"
    qos: Literal[1] = 1
    batch_size: int = Field(2000, ge=1, le=20_000)
    max_inflight: int = Field(16, ge=1, le=1000)
    keepalive_s: int = Field(30, ge=5, le=3600)
    datastream_ids: dict[str, int | str] = Field(
        default_factory=dict,
        description="SensorThings mode: '<source>/<quantity>' → Datastream id.",
    )

    @model_validator(mode="after")
    def _window_bound(self) -> MqttSettings:
        if self.batch_size * self.max_inflight > 60_000 and self.mode == "sensorthings":
            raise ValueError("batch_size × max_inflight must stay under 60000 messages in flight")
        return self
