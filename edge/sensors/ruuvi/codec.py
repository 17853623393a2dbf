"""RuuviTag / Ruuvi Air BLE advertisement decoder (manufacturer id 0x0499).

Pure functions over the manufacturer-data payload *after* the 2-byte company id, as bleak
hands it over in ``AdvertisementData.manufacturer_data[0x0499]``. Supported formats:

- 3 (RAWv1, older RuuviTag firmware, 14 bytes; it has no "not available" values),
- 5 (RAWv2, RuuviTag, 24 bytes),
- 6 (Ruuvi Air, BT4 legacy advertisement, 20 bytes),
- E1 (Ruuvi Air, BT5 extended advertisement, 40 bytes).

Layout and "not available" sentinels follow the Ruuvi docs (repository ``ruuvi/docs``,
communication/bluetooth-advertisements). Fields holding their sentinel are dropped, never
reported. The E1 sound fields are "reserved" in the docs; this module follows the firmware
test vector (repository ``ruuvi/ruuvi.endpoints.c``): three 9-bit values, dB(A) = 18 + raw/5,
sentinel 0x1FF. Format 6 byte 14 is left undecoded (no vector confirms it).
Acceleration (format 5) is reported in ``info`` only, in mG.
"""

from __future__ import annotations

import math
import struct

from edge.codec import (
    BadPayload,
    Frame,
    PayloadDecoder,
    Reading,
    SensorDescriptor,
)

MANUFACTURER_ID = 0x0499

_LUX_STEP = math.log(65536) / 254  # format 6 luminosity code → lux, per Ruuvi docs


def _mac(raw: bytes) -> str | None:
    if raw == b"\xff" * len(raw):
        return None
    return raw.hex(":").upper()


def _environment(payload: bytes, readings: list[Reading]) -> None:
    """Bytes 1–6, shared by all formats: temperature, humidity, pressure."""
    temp, hum, pres = struct.unpack_from(">hHH", payload, 1)
    if temp != -0x8000:
        readings.append(Reading("temperature", round(temp * 0.005, 3)))
    if hum != 0xFFFF:
        readings.append(Reading("humidity", round(hum * 0.0025, 4)))
    if pres != 0xFFFF:
        readings.append(Reading("pressure", float(pres + 50000)))


def _nine_bit(high: int, flags: int, bit: int) -> int:
    return (high << 1) | ((flags >> bit) & 1)


def _air_indices(voc_hi: int, nox_hi: int, flags: int, readings: list[Reading]) -> None:
    voc = _nine_bit(voc_hi, flags, 6)
    nox = _nine_bit(nox_hi, flags, 7)
    if voc != 0x1FF:
        readings.append(Reading("voc_index", float(voc)))
    if nox != 0x1FF:
        readings.append(Reading("nox_index", float(nox)))


def _decode_v5(payload: bytes) -> Frame:
    if len(payload) < 24:
        raise BadPayload("short")
    readings: list[Reading] = []
    _environment(payload, readings)
    acc = struct.unpack_from(">hhh", payload, 7)
    power, movement, sequence = struct.unpack_from(">HBH", payload, 13)
    battery_mv, tx_code = power >> 5, power & 0x1F
    if battery_mv != 2047:
        readings.append(Reading("battery_voltage", round((battery_mv + 1600) / 1000, 3)))
    info: dict[str, object] = {"format": 5}
    if all(a != -0x8000 for a in acc):
        info["acceleration_mg"] = acc
    if tx_code != 31:
        info["tx_power_dbm"] = tx_code * 2 - 40
    if movement != 0xFF:
        info["movement_counter"] = movement
    if sequence != 0xFFFF:
        info["sequence"] = sequence
    mac = _mac(payload[18:24])
    if mac is not None:
        info["mac"] = mac
    return _frame(readings, info)


def _decode_v3(payload: bytes) -> Frame:
    """RAWv1 (repository ruuvi/ruuvi-sensor-protocols, dataformat_03.md)."""
    if len(payload) < 14:
        raise BadPayload("short")
    hum, t_int, t_frac, pres = struct.unpack_from(">BBBH", payload, 1)
    acc = struct.unpack_from(">hhh", payload, 6)
    (battery_mv,) = struct.unpack_from(">H", payload, 12)
    temp = (t_int & 0x7F) + t_frac / 100
    readings = [
        Reading("temperature", round(-temp if t_int & 0x80 else temp, 2)),
        Reading("humidity", hum * 0.5),
        Reading("pressure", float(pres + 50000)),
        Reading("battery_voltage", battery_mv / 1000),
    ]
    return _frame(readings, {"format": 3, "acceleration_mg": acc})


def _decode_v6(payload: bytes) -> Frame:
    if len(payload) < 20:
        raise BadPayload("short")
    readings: list[Reading] = []
    _environment(payload, readings)
    pm25, co2, voc_hi, nox_hi, lum, _reserved, sequence, flags = struct.unpack_from(
        ">HHBBBBBB", payload, 7
    )
    if pm25 != 0xFFFF:
        readings.append(Reading("pm2_5", round(pm25 * 0.1, 1)))
    if co2 != 0xFFFF:
        readings.append(Reading("co2", float(co2)))
    _air_indices(voc_hi, nox_hi, flags, readings)
    if lum != 0xFF:
        readings.append(Reading("illuminance", round(math.exp(lum * _LUX_STEP) - 1, 2)))
    info: dict[str, object] = {
        "format": 6,
        "sequence": sequence,
        "flags": flags,
        "calibration_in_progress": bool(flags & 0x01),
    }
    mac = _mac(payload[17:20])
    if mac is not None:
        info["mac_low"] = mac
    return _frame(readings, info)


def _decode_e1(payload: bytes) -> Frame:
    if len(payload) < 40:
        raise BadPayload("short")
    readings: list[Reading] = []
    _environment(payload, readings)
    for offset, code in ((7, "pm1"), (9, "pm2_5"), (11, "pm4"), (13, "pm10")):
        (pm,) = struct.unpack_from(">H", payload, offset)
        if pm != 0xFFFF:
            readings.append(Reading(code, round(pm * 0.1, 1)))
    (co2,) = struct.unpack_from(">H", payload, 15)
    if co2 != 0xFFFF:
        readings.append(Reading("co2", float(co2)))
    flags = payload[28]
    _air_indices(payload[17], payload[18], flags, readings)
    lum = int.from_bytes(payload[19:22], "big")
    if lum != 0xFFFFFF:
        readings.append(Reading("illuminance", round(lum * 0.01, 2)))
    info: dict[str, object] = {
        "format": 0xE1,
        "flags": flags,
        "calibration_in_progress": bool(flags & 0x01),
    }
    sound = _sound_e1(payload[22:25], flags)
    if "average" in sound:
        readings.append(Reading("sound_level", sound["average"]))
    for key in ("instant", "peak"):
        if key in sound:
            info[f"sound_{key}_dba"] = sound[key]
    sequence = int.from_bytes(payload[25:28], "big")
    if sequence != 0xFFFFFF:
        info["sequence"] = sequence
    mac = _mac(payload[34:40])
    if mac is not None:
        info["mac"] = mac
    return _frame(readings, info)


def _sound_e1(raw: bytes, flags: int) -> dict[str, float]:
    """Firmware layout: instant/average/peak, 9 bits each, LSBs in flag bits 3/4/5."""
    out: dict[str, float] = {}
    for i, key in enumerate(("instant", "average", "peak")):
        value = _nine_bit(raw[i], flags, 3 + i)
        if value != 0x1FF:
            out[key] = round(18 + value / 5, 1)
    return out


def _frame(readings: list[Reading], info: dict[str, object]) -> Frame:
    skip = None if readings else "no-valid-fields"
    return Frame(kind="data", readings=tuple(readings), skip_reason=skip, info=info)


_FORMATS = {0x03: _decode_v3, 0x05: _decode_v5, 0x06: _decode_v6, 0xE1: _decode_e1}


def decode(payload: bytes) -> Frame:
    """Decode one Ruuvi manufacturer-data payload (company id stripped).

    Raises :class:`BadPayload` (and nothing else) for empty, short or unknown-format payloads.
    """
    if not payload:
        raise BadPayload("empty")
    decoder = _FORMATS.get(payload[0])
    if decoder is None:
        raise BadPayload("unsupported-format")
    return decoder(bytes(payload))


class RuuviDecoder(PayloadDecoder):
    """:class:`~edge.codec.StreamDecoder`: one ``feed`` = one advertisement payload."""

    decode = staticmethod(decode)


DESCRIPTOR = SensorDescriptor(
    name="ruuvi",
    model="RuuviTag (formats 3, 5) / Ruuvi Air (formats 6, E1)",
    manufacturer="Ruuvi Innovations",
    interface="ble",
    quantities=(
        "temperature",
        "humidity",
        "pressure",
        "battery_voltage",
        "pm1",
        "pm2_5",
        "pm4",
        "pm10",
        "co2",
        "voc_index",
        "nox_index",
        "illuminance",
        "sound_level",
    ),
    decoder=RuuviDecoder,
    default_interval_s=1.0,
)
