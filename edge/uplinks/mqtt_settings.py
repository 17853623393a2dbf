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
    contract: Literal[1, 2] = Field(2, description="Compact mode: upload contract major version.")
    confirm: Literal["twin", "broker"] | None = Field(
        None, description="Delete observations on the twin's ack (twin) or the broker's PUBACK."
    )
    ack_timeout_s: float = Field(30.0, ge=1, le=3600, description="Resend what is not acked.")
    max_latency_s: float = Field(
        2.0, ge=0, le=60, description="Longest a committed observation waits to fill a message."
    )
    heartbeat_s: float = Field(60.0, ge=5, le=86_400, description="Status refresh interval.")

    @property
    def confirmation(self) -> Literal["twin", "broker"]:
        """``confirm`` as it applies: unset means twin in compact mode, broker otherwise."""
        if self.confirm is not None:
            return self.confirm
        return "twin" if self.mode == "compact" else "broker"

    @model_validator(mode="after")
    def _window_bound(self) -> MqttSettings:
        if self.batch_size * self.max_inflight > 60_000 and self.mode == "sensorthings":
            raise ValueError("batch_size × max_inflight must stay under 60000 messages in flight")
        if self.confirm == "twin" and self.mode == "sensorthings":
            raise ValueError(
                'confirm = "twin" needs mode = "compact": SensorThings consumers send no acks'
            )
        return self
