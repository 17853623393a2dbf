"""The one table of observed quantities: code, UCUM unit and a stable definition URI.

Everything that names a quantity (codecs, config, uplinks, the twin receiver) refers to the
short ``code`` in this table. The URIs are kept here, and only here, because the Flemish OSLO
IRIs for air quality are still moving: when they settle, this table changes and nothing else.

URI choices (documented in docs/upload-contract.md):
- pollutants in the EEA air-quality pollutant vocabulary (dd.eionet.europa.eu/vocabulary/aq/pollutant),
- physical quantities in QUDT quantity kinds,
- everything else in the project's own namespace ``DUET_NS``.
"""

from __future__ import annotations

from dataclasses import dataclass

EEA_POLLUTANT = "http://dd.eionet.europa.eu/vocabulary/aq/pollutant/"
QUDT_KIND = "http://qudt.org/vocab/quantitykind/"
DUET_NS = "https://w3id.org/duet-edge/def/quantity/"
VKM_KENMERK = "https://data.vlaanderen.be/id/concept/VkmVerkeersKenmerkType/"
VKM_VOERTUIG = "https://data.vlaanderen.be/id/concept/VkmVoertuigType/"
COUNT = VKM_KENMERK + "aantal"


@dataclass(frozen=True, slots=True)
class Quantity:
    """An observed property as the twin sees it."""

    code: str
    label: str
    unit: str  # UCUM case-sensitive code
    unit_symbol: str  # human-readable symbol for SensorThings unitOfMeasurement.symbol
    uri: str
    resolution: float  # smallest meaningful step; used for the compact wire encoding
    # Flemish OSLO concepts that characterise the property (OSLO Verkeersmetingen for traffic:
    # the VkmVerkeersKenmerkType, then the VkmVoertuigType when the count is of one class);
    # used by the twin's linked-data export (edge/ingest/oslo.py).
    oslo: tuple[str, ...] = ()


_QUANTITIES: tuple[Quantity, ...] = (
    Quantity("pm1", "PM1", "ug/m3", "µg/m³", DUET_NS + "pm1", 0.01),
    Quantity("pm2_5", "PM2.5", "ug/m3", "µg/m³", EEA_POLLUTANT + "6001", 0.01),
    Quantity("pm4", "PM4", "ug/m3", "µg/m³", DUET_NS + "pm4", 0.01),
    Quantity("pm10", "PM10", "ug/m3", "µg/m³", EEA_POLLUTANT + "5", 0.01),
    Quantity("pm1_cf1", "PM1 (CF=1)", "ug/m3", "µg/m³", DUET_NS + "pm1_cf1", 0.01),
    Quantity("pm2_5_cf1", "PM2.5 (CF=1)", "ug/m3", "µg/m³", DUET_NS + "pm2_5_cf1", 0.01),
    Quantity("pm10_cf1", "PM10 (CF=1)", "ug/m3", "µg/m³", DUET_NS + "pm10_cf1", 0.01),
    Quantity("nc0_3", "Particles > 0.3 µm", "/dL", "#/0.1 L", DUET_NS + "nc0_3", 1.0),
    Quantity("nc0_5", "Particles > 0.5 µm", "/dL", "#/0.1 L", DUET_NS + "nc0_5", 1.0),
    Quantity("nc1", "Particles > 1.0 µm", "/dL", "#/0.1 L", DUET_NS + "nc1", 1.0),
    Quantity("nc2_5", "Particles > 2.5 µm", "/dL", "#/0.1 L", DUET_NS + "nc2_5", 1.0),
    Quantity("nc5", "Particles > 5 µm", "/dL", "#/0.1 L", DUET_NS + "nc5", 1.0),
    Quantity("nc10", "Particles > 10 µm", "/dL", "#/0.1 L", DUET_NS + "nc10", 1.0),
    Quantity("ncm0_5", "Number conc. PM0.5", "/cm3", "#/cm³", DUET_NS + "ncm0_5", 0.001),
    Quantity("ncm1", "Number conc. PM1", "/cm3", "#/cm³", DUET_NS + "ncm1", 0.001),
    Quantity("ncm2_5", "Number conc. PM2.5", "/cm3", "#/cm³", DUET_NS + "ncm2_5", 0.001),
    Quantity("ncm4", "Number conc. PM4", "/cm3", "#/cm³", DUET_NS + "ncm4", 0.001),
    Quantity("ncm10", "Number conc. PM10", "/cm3", "#/cm³", DUET_NS + "ncm10", 0.001),
    Quantity(
        "particle_size", "Typical particle size", "um", "µm", DUET_NS + "particle_size", 0.001
    ),
    Quantity("no2", "NO2", "ug/m3", "µg/m³", EEA_POLLUTANT + "8", 0.01),
    Quantity("o3", "O3", "ug/m3", "µg/m³", EEA_POLLUTANT + "7", 0.01),
    Quantity("co", "CO", "mg/m3", "mg/m³", EEA_POLLUTANT + "10", 0.001),
    Quantity("co2", "CO2", "[ppm]", "ppm", DUET_NS + "co2", 1.0),
    Quantity("temperature", "Air temperature", "Cel", "°C", QUDT_KIND + "Temperature", 0.01),
    Quantity("humidity", "Relative humidity", "%", "%", QUDT_KIND + "RelativeHumidity", 0.01),
    Quantity("pressure", "Air pressure", "Pa", "Pa", QUDT_KIND + "AtmosphericPressure", 1.0),
    Quantity("voc_index", "VOC index", "{index}", "index", DUET_NS + "voc_index", 1.0),
    Quantity("nox_index", "NOx index", "{index}", "index", DUET_NS + "nox_index", 1.0),
    Quantity("illuminance", "Illuminance", "lx", "lx", QUDT_KIND + "Illuminance", 0.01),
    Quantity("sound_level", "Sound level (A)", "dB", "dB(A)", DUET_NS + "sound_level", 0.1),
    Quantity("battery_voltage", "Battery voltage", "V", "V", DUET_NS + "battery_voltage", 0.001),
    Quantity(
        "mox_response", "Metal-oxide sensor response (raw)", "1", "1", DUET_NS + "mox_response", 1.0
    ),
    # Traffic: counts per interval; names follow Telraam's public fields (see edge/sensors/ops243/README.md).
    Quantity("pedestrian", "Pedestrians", "{count}", "count", DUET_NS + "traffic/pedestrian", 1.0,
             (COUNT, VKM_VOERTUIG + "voetganger")),
    Quantity("bike", "Two-wheelers", "{count}", "count", DUET_NS + "traffic/bike", 1.0,
             (COUNT, VKM_VOERTUIG + "fietser")),
    Quantity("car", "Cars", "{count}", "count", DUET_NS + "traffic/car", 1.0,
             (COUNT, VKM_VOERTUIG + "auto")),
    Quantity("heavy", "Heavy vehicles", "{count}", "count", DUET_NS + "traffic/heavy", 1.0,
             (COUNT, VKM_VOERTUIG + "vrachtwagen")),
    Quantity(
        "traffic_count",
        "Vehicles (all classes)",
        "{count}",
        "count",
        DUET_NS + "traffic/count",
        1.0,
        (COUNT,),
    ),
    Quantity("v85", "85th percentile speed", "km/h", "km/h", DUET_NS + "traffic/v85", 0.1,
             (VKM_KENMERK + "V85", VKM_VOERTUIG + "auto")),
    Quantity("speed", "Object speed", "km/h", "km/h", DUET_NS + "traffic/speed", 0.01),
    Quantity("uptime", "Counting uptime fraction", "1", "1", DUET_NS + "traffic/uptime", 0.001),
)

QUANTITIES: dict[str, Quantity] = {q.code: q for q in _QUANTITIES}

# Traffic counts per Telraam side and per 10 km/h speed class (firmware traffic node).
for _side in ("lft", "rgt"):
    QUANTITIES[f"traffic_count_{_side}"] = Quantity(
        f"traffic_count_{_side}",
        f"Vehicles ({_side})",
        "{count}",
        "count",
        DUET_NS + f"traffic/count_{_side}",
        1.0,
        (COUNT,),
    )
for _lo in range(0, 80, 10):
    _label = f"{_lo}+ km/h" if _lo == 70 else f"{_lo}-{_lo + 10} km/h"
    QUANTITIES[f"speed_class_{_lo}"] = Quantity(
        f"speed_class_{_lo}",
        f"Objects at {_label}",
        "{count}",
        "count",
        DUET_NS + f"traffic/speed_class_{_lo}",
        1.0,
        (COUNT,),
    )

# Telraam per-direction class counts and the car speed histogram (radar traffic, edge/sensors/ops243/traffic.py).
_VEHICLE = {"pedestrian": "voetganger", "bike": "fietser", "car": "auto", "heavy": "vrachtwagen"}
for _cls in ("pedestrian", "bike", "car", "heavy"):
    for _side in ("lft", "rgt"):
        QUANTITIES[f"{_cls}_{_side}"] = Quantity(
            f"{_cls}_{_side}",
            f"{_cls} ({_side})",
            "{count}",
            "count",
            DUET_NS + f"traffic/{_cls}_{_side}",
            1.0,
            (COUNT, VKM_VOERTUIG + _VEHICLE[_cls]),
        )
for _lo in range(0, 130, 10):
    _label = f"{_lo}+ km/h" if _lo == 120 else f"{_lo}-{_lo + 10} km/h"
    QUANTITIES[f"car_speed_hist_{_lo}"] = Quantity(
        f"car_speed_hist_{_lo}",
        f"Cars at {_label} (share)",
        "%",
        "%",
        DUET_NS + f"traffic/car_speed_hist_{_lo}",
        0.01,
    )


def quantity(code: str) -> Quantity:
    """Look up a quantity by its code; raises KeyError naming the known codes."""
    try:
        return QUANTITIES[code]
    except KeyError:
        known = ", ".join(sorted(QUANTITIES))
        raise KeyError(f"unknown quantity {code!r}; known: {known}") from None
