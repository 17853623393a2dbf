"""Settings for the BLE scanner: the ``[ble]`` section of the gateway config.

Declared next to the scanner (ESPHome style); the gateway config includes it as a section.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

_MAC = re.compile(r"^[0-9A-F]{2}(:[0-9A-F]{2}){5}$")


def normalise_mac(value: str) -> str:
    """``aa-bb-cc-dd-ee-ff`` / ``aabbccddeeff`` → ``AA:BB:CC:DD:EE:FF``; ValueError otherwise."""
    text = value.strip().upper().replace("-", ":")
    if len(text) == 12 and ":" not in text:
        text = ":".join(text[i : i + 2] for i in range(0, 12, 2))
    if not _MAC.match(text):
        raise ValueError(
            f"{value!r} is not a Bluetooth address; "
            "expected six hex byte pairs like AA:BB:CC:DD:EE:FF"
        )
    return text


SensorName = Literal["ruuvi", "aranet4"]


def _all_sensors() -> list[SensorName]:
    return ["ruuvi", "aranet4"]


class GattPollDevice(BaseModel):
    """An Aranet4 read over GATT (for devices with Smart Home integrations off)."""

    model_config = ConfigDict(extra="forbid")

    address: str = Field(description="Bluetooth address of the Aranet4, e.g. 'D0:1B:5A:00:11:22'.")
    name: str | None = Field(default=None, description="Optional label used in logs.")
    interval_s: float | None = Field(
        default=None,
        gt=0,
        le=86400,
        description="Seconds between reads; default: the measurement interval the device reports "
        "(read right after each new measurement).",
    )

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        return normalise_mac(value)


class BleSettings(BaseModel):
    """BLE scanning for RuuviTag / Ruuvi Air / Aranet4 advertisements and Aranet4 GATT polling."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True, description="Run the BLE scanner at all.")
    adapter: str | None = Field(
        default=None,
        pattern=r"^hci[0-9]+$",
        description="BlueZ adapter name such as 'hci0'; default: the system's default adapter.",
    )
    scanning_mode: Literal["passive", "active"] = Field(
        default="passive",
        description="'passive' only listens (no scan requests; needs BlueZ ≥ 5.56 with "
        "experimental interfaces); falls back to 'active' with a warning when unsupported.",
    )
    sensors: list[SensorName] = Field(
        default_factory=_all_sensors,
        description="Sensor types whose advertisements are decoded: 'ruuvi', 'aranet4'.",
    )
    allow: list[str] = Field(
        default_factory=list,
        description="Allow-list: Bluetooth addresses or advertised names. Empty = every device "
        "of a supported type.",
    )
    deduplicate: bool = Field(
        default=True,
        description="Drop repeated advertisements of the same measurement (same sequence number).",
    )
    stall_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="Restart scanning when no advertisement at all arrived for this long "
        "(BlueZ goes silent when the adapter disappears).",
    )
    backoff_initial_s: float = Field(default=1.0, gt=0, description="First retry delay.")
    backoff_max_s: float = Field(default=60.0, gt=0, description="Longest retry delay.")
    gatt_poll: list[GattPollDevice] = Field(
        default_factory=list, description="Aranet4 devices to read over GATT instead of adverts."
    )
    gatt_timeout_s: float = Field(
        default=20.0, gt=0, description="Connect + read timeout for one GATT poll."
    )
    queue_size: int = Field(
        default=1000, ge=1, description="Readings buffered for a slow consumer; oldest dropped."
    )

    @field_validator("allow")
    @classmethod
    def _allow(cls, values: list[str]) -> list[str]:
        out = []
        for value in values:
            try:
                out.append(normalise_mac(value))
            except ValueError:
                if not value.strip():
                    msg = "allow entries must be an address or a non-empty name"
                    raise ValueError(msg) from None
                out.append(value.strip())  # an advertised name
        return out


class BleSourceOptions(BleSettings):
    """``options`` of a ``type = "ble"`` source: the scanner settings plus naming and replay."""

    names: dict[str, str] = Field(
        default_factory=dict,
        description="Device id (address, or the MAC a Ruuvi puts in its payload) or advertised "
        "name → sensor id. Unnamed devices get '<type>-<id without colons>'.",
    )
    replay: Path | None = Field(
        default=None,
        description="Hardware-in-the-loop: replay a recorded advert stream (JSON lines) "
        "instead of scanning a radio.",
    )
    replay_speed: float = Field(
        default=1.0, ge=0, description="Replay speed factor (0: as fast as possible)."
    )
