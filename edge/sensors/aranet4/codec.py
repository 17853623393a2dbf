"""Aranet4 (SAF Tehnika) CO2/T/RH/pressure decoder: advertisement and GATT readings.

Pure functions. Facts follow repository ``Anrijs/Aranet4-Python`` (``aranet4/client.py``,
``docs/UUIDs.md``):

- advertisement: manufacturer id 0x0702, present only with "Smart Home integrations" on
  (firmware ≥ 1.2.0). Byte 0 flags (b0 disconnected, b2–3 calibration state, b4 DFU, b5
  integrations), bytes 1–3 firmware patch/minor/major, 4–7 unknown, 8–20 the current-readings
  record below, byte 21 a counter (⚠ meaning inferred, used only for de-duplication).
  Aranet2 / Aranet Radiation / Aranet Radon share the company id: see :func:`is_aranet4`;
- GATT ``f0cd3001-…``: current readings ``<HHHBBBHH`` (CO2 ppm, temperature raw/20 °C,
  pressure raw/10 hPa, humidity %, battery %, status colour, interval s, age s);
  ``f0cd1503-…``: the first six fields only.

During CO2 calibration the sensor marks CO2 (bit 15), pressure (bit 15) and temperature
(bit 14) as invalid: such fields are dropped. A record whose every field is dropped is
returned with ``skip_reason="calibration"``.
"""

from __future__ import annotations

import struct

from edge.codec import (
    BadPayload,
    Frame,
    PayloadDecoder,
    Reading,
    SensorDescriptor,
)

MANUFACTURER_ID = 0x0702
SERVICE_UUID = "0000fce0-0000-1000-8000-00805f9b34fb"
SERVICE_UUID_OLD = "f0cd1400-95da-4f4b-9ac8-aa55d312af0c"
CURRENT_READINGS_UUID = "f0cd3001-95da-4f4b-9ac8-aa55d312af0c"
CURRENT_READINGS_SHORT_UUID = "f0cd1503-95da-4f4b-9ac8-aa55d312af0c"

_FULL = struct.Struct("<HHHBBBHH")  # 13 bytes
_SHORT = struct.Struct("<HHHBBB")  # 9 bytes
_STATUS = {1: "green", 2: "yellow", 3: "red"}
_ARANET4_ADVERT_LENGTHS = (7, 22)
_CALIBRATION = {0: "idle", 1: "end-request", 2: "in-progress", 3: "error"}


def decode_readings(record: bytes) -> Frame:
    """Decode a ``f0cd3001`` (13 bytes) or ``f0cd1503`` (9 bytes) current-readings record."""
    if len(record) >= _FULL.size:
        fields = _FULL.unpack_from(record)
    elif len(record) >= _SHORT.size:
        fields = _SHORT.unpack_from(record)
    else:
        raise BadPayload("short")
    co2, temp, pres, hum, battery, status = fields[:6]
    readings: list[Reading] = []
    invalid: list[str] = []
    if co2 & 0x8000:
        invalid.append("co2")
    else:
        readings.append(Reading("co2", float(co2)))
    if temp & 0x4000:
        invalid.append("temperature")
    else:
        readings.append(Reading("temperature", round(temp / 20, 2)))
    if pres & 0x8000:
        invalid.append("pressure")
    else:
        readings.append(Reading("pressure", float(pres * 10)))  # raw is 0.1 hPa = 10 Pa
    readings.append(Reading("humidity", float(hum)))
    info: dict[str, object] = {"battery_percent": battery, "status": _STATUS.get(status, status)}
    if invalid:
        info["invalid_fields"] = tuple(invalid)
    if len(fields) == 8:
        info["interval_s"] = fields[6]
        info["age_s"] = fields[7]
    skip = "calibration" if len(invalid) == 3 else None
    if skip:
        readings = []  # humidity alone during a calibration record is not trusted either
    return Frame(kind="data", readings=tuple(readings), skip_reason=skip, info=info)


def is_aranet4(payload: bytes, name: str | None = None) -> bool:
    """Tell an Aranet4 from the other SAF Tehnika sensors sharing company id 0x0702.

    Aranet2 / Aranet Radiation / Aranet Radon payloads start with a model byte (1, 2, 3) before
    the flags; an Aranet4's has none. As in Aranet4-Python: trust an advertised name
    ("Aranet4 …" vs "Aranet2 …", "Aranet☢ …", "AranetRn …"), else the Aranet4 payload lengths
    (7 bytes with integrations off, 22 with them on); passive scans often carry no name.
    """
    if name and name.startswith("Aranet"):
        return name.startswith("Aranet4")
    return len(payload) in _ARANET4_ADVERT_LENGTHS


def decode_advertisement(payload: bytes, name: str | None = None) -> Frame:
    """Decode manufacturer data 0x0702 (company id stripped) from an Aranet4.

    An advertisement from a device with integrations off (or firmware before 1.2.0) carries
    flags and version only: it is returned with ``skip_reason="integrations-off"`` (use GATT
    polling for that device). Other Aranet models raise ``BadPayload("other-model")``.
    """
    if len(payload) < 4:
        raise BadPayload("short")
    if not is_aranet4(payload, name):
        raise BadPayload("other-model")
    flags = payload[0]
    info: dict[str, object] = {
        "flags": flags,
        "firmware": f"{payload[3]}.{payload[2]}.{payload[1]}",
        "integrations": bool(flags & 0x20) and len(payload) >= 21,
        "calibration_state": _CALIBRATION[(flags >> 2) & 0x03],
    }
    if not info["integrations"]:
        return Frame(kind="data", skip_reason="integrations-off", info=info)
    frame = decode_readings(payload[8:21])
    info.update(frame.info)
    if len(payload) > 21:
        info["counter"] = payload[21]
    return Frame(kind="data", readings=frame.readings, skip_reason=frame.skip_reason, info=info)


class Aranet4Decoder(PayloadDecoder):
    """:class:`~edge.codec.StreamDecoder`: one ``feed`` = one advertisement payload."""

    decode = staticmethod(decode_advertisement)


DESCRIPTOR = SensorDescriptor(
    name="aranet4",
    model="Aranet4",
    manufacturer="SAF Tehnika",
    interface="ble",
    quantities=("co2", "temperature", "pressure", "humidity"),
    decoder=Aranet4Decoder,
    default_interval_s=60.0,
)
