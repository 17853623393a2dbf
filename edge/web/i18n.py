"""Dutch and English texts of the status pages; the browser's Accept-Language picks one."""

from __future__ import annotations

LANGUAGES = ("en", "nl")
DEFAULT = "en"

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "title": "Air sensor gateway",
        "tech_title": "Gateway — technician view",
        "status_ok": "All good: measuring and uploading.",
        "status_starting": "Starting up: waiting for the first measurements.",
        "status_sensor_problem": "Sensor problem: {sensors}.",
        "status_not_uploading": "Not uploading since {since}; measurements are kept in the buffer.",
        "status_no_uplink": "Measuring; no upload configured.",
        "updated": "updated {age} ago",
        "no_data": "no data yet",
        "band_good": "Good",
        "band_fair": "Fair",
        "band_moderate": "Moderate",
        "band_poor": "Poor",
        "band_very_poor": "Very poor",
        "band_extremely_poor": "Extremely poor",
        "band_note": "European Air Quality Index band (indicative, from this sensor).",
        "last_24h": "last 24 h",
        "flag_ok": "checks passed",
        "flag_not_evaluated": "not checked",
        "flag_suspect": "suspect",
        "flag_fail": "bad",
        "flag_missing": "missing",
        "test_flat_line": "value stuck",
        "test_spike": "sudden spike",
        "test_gross_range": "outside what the sensor can measure",
        "test_climatology": "unusual for the season",
        "test_rate_of_change": "changing unusually fast",
        "test_gap": "gap in the data",
        "test_calibration": "outside the calibrated range",
        "test_calibration_range": "outside the calibrated range",
        "test_ml_anomaly": "unusual pattern",
        "test_anomaly": "unusual for this sensor",
        "test_colocated": "disagrees with the sensor next to it",
        "test_colocated_drift": "drifting from the sensor next to it",
        "for_duration": "for {duration}",
        "sensor": "Sensor",
        "state": "State",
        "frames_ok": "Frames ok",
        "frames_bad": "Frames bad",
        "last_frame": "Last frame",
        "reconnects": "Reconnects",
        "device": "Device",
        "buffer": "Buffer",
        "buffer_depth": "Observations waiting",
        "oldest_unsent": "Oldest unsent",
        "buffer_size": "Size on disk",
        "uplink": "Uplink",
        "last_confirmed": "Last confirmed upload",
        "evicted": "Evicted (buffer full or too old)",
        "refused": "Refused (buffer full)",
        "dead_lettered": "Rejected by the twin",
        "clock": "Clock",
        "clock_synced": "synchronised",
        "clock_unsynced": "NOT synchronised",
        "clock_unknown": "unknown",
        "certificates": "Certificates",
        "expires": "expires",
        "versions": "Versions",
        "health": "Health check",
        "tech_link": "Technician view",
        "home_link": "Home",
        "never": "never",
        "ago": "{age} ago",
        "actions": "Actions (need the token)",
        "restart": "Restart",
        "upload_now": "Upload now",
        "token": "Token",
    },
    "nl": {
        "title": "Luchtsensor-gateway",
        "tech_title": "Gateway — technische weergave",
        "status_ok": "Alles in orde: meet en verstuurt.",
        "status_starting": "Opstarten: wacht op de eerste metingen.",
        "status_sensor_problem": "Probleem met sensor: {sensors}.",
        "status_not_uploading": "Verstuurt niet sinds {since}; metingen blijven in de buffer bewaard.",
        "status_no_uplink": "Meet; versturen is niet ingesteld.",
        "updated": "{age} geleden bijgewerkt",
        "no_data": "nog geen gegevens",
        "band_good": "Goed",
        "band_fair": "Redelijk",
        "band_moderate": "Matig",
        "band_poor": "Slecht",
        "band_very_poor": "Zeer slecht",
        "band_extremely_poor": "Extreem slecht",
        "band_note": "Klasse van de Europese luchtkwaliteitsindex (indicatief, van deze sensor).",
        "last_24h": "laatste 24 u",
        "flag_ok": "controles geslaagd",
        "flag_not_evaluated": "niet gecontroleerd",
        "flag_suspect": "twijfelachtig",
        "flag_fail": "fout",
        "flag_missing": "ontbreekt",
        "test_flat_line": "waarde staat stil",
        "test_spike": "plotse piek",
        "test_gross_range": "buiten het meetbereik van de sensor",
        "test_climatology": "ongewoon voor het seizoen",
        "test_rate_of_change": "verandert ongewoon snel",
        "test_gap": "gat in de gegevens",
        "test_calibration": "buiten het gekalibreerde bereik",
        "test_calibration_range": "buiten het gekalibreerde bereik",
        "test_ml_anomaly": "ongewoon patroon",
        "test_anomaly": "ongewoon voor deze sensor",
        "test_colocated": "wijkt af van de sensor ernaast",
        "test_colocated_drift": "drijft weg van de sensor ernaast",
        "for_duration": "al {duration}",
        "sensor": "Sensor",
        "state": "Toestand",
        "frames_ok": "Frames goed",
        "frames_bad": "Frames fout",
        "last_frame": "Laatste frame",
        "reconnects": "Herverbindingen",
        "device": "Toestel",
        "buffer": "Buffer",
        "buffer_depth": "Wachtende metingen",
        "oldest_unsent": "Oudste niet verstuurd",
        "buffer_size": "Grootte op schijf",
        "uplink": "Verbinding",
        "last_confirmed": "Laatste bevestigde upload",
        "evicted": "Verwijderd (buffer vol of te oud)",
        "refused": "Geweigerd (buffer vol)",
        "dead_lettered": "Geweigerd door de tweeling",
        "clock": "Klok",
        "clock_synced": "gesynchroniseerd",
        "clock_unsynced": "NIET gesynchroniseerd",
        "clock_unknown": "onbekend",
        "certificates": "Certificaten",
        "expires": "verloopt",
        "versions": "Versies",
        "health": "Gezondheidscontrole",
        "tech_link": "Technische weergave",
        "home_link": "Start",
        "never": "nooit",
        "ago": "{age} geleden",
        "actions": "Acties (token nodig)",
        "restart": "Herstarten",
        "upload_now": "Nu versturen",
        "token": "Token",
    },
}


def pick_language(accept_language: str | None, override: str | None = None) -> str:
    """The best of our languages for an Accept-Language header (``?lang=`` overrides)."""
    if override in LANGUAGES:
        return str(override)
    if not accept_language:
        return DEFAULT
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate(accept_language.split(",")):
        fields = part.strip().split(";")
        tag = fields[0].strip().lower()
        weight = 1.0
        for param in fields[1:]:
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        primary = tag.split("-")[0]
        if primary in LANGUAGES and weight > 0:
            ranked.append((-weight, position, primary))
    return min(ranked)[2] if ranked else DEFAULT
