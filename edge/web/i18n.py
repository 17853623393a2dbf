"""Dutch and English texts of the status pages, and dates and numbers the way each writes them.

Dutch first: a browser that asks for neither language gets Dutch. ``?lang=`` (the switch on
the page) overrides the browser and is remembered in a cookie.
"""

from __future__ import annotations

import datetime as dt
from typing import Final

LANGUAGES: Final = ("nl", "en")
DEFAULT: Final = "nl"
COOKIE: Final = "duet_lang"

# Host page (rendered on the gateway): plain words only; tests/web/test_home.py scans for jargon.
_HOST_NL: dict[str, str] = {
    "page_title": "Luchtkwaliteit",
    "site_unnamed": "Luchtmeter",
    "switch_language": "Taal",
    "air_now": "Luchtkwaliteit nu",
    "band_good": "Goed",
    "band_fair": "Redelijk",
    "band_moderate": "Matig",
    "band_poor": "Slecht",
    "band_very_poor": "Zeer slecht",
    "band_extremely_poor": "Extreem slecht",
    "advice_good": "De lucht is goed. Ga gerust naar buiten zoals u gewoon bent.",
    "advice_fair": "De lucht is in orde voor uw gewone activiteiten buiten.",
    "advice_moderate": "U kunt uw gewone activiteiten buiten blijven doen.",
    "advice_poor": "Prikken uw ogen, hoest u of hebt u keelpijn? Doe het dan buiten rustiger aan, zeker bij zware inspanning.",
    "advice_very_poor": "Hebt u last van prikkende ogen, hoesten of keelpijn? Beperk dan zware inspanning buiten.",
    "advice_extremely_poor": "Beperk lichamelijke inspanning buiten.",
    "sensitive": "Gevoelige personen (astma, hart- of longziekte, kinderen, ouderen)",
    "advice_sensitive_good": "Geen voorzorgen nodig.",
    "advice_sensitive_fair": "Geen voorzorgen nodig.",
    "advice_sensitive_moderate": "Hebt u klachten? Overweeg dan minder zware inspanning buiten.",
    "advice_sensitive_poor": "Overweeg minder lichamelijke inspanning, vooral buiten, en zeker als u klachten hebt.",
    "advice_sensitive_very_poor": "Beperk lichamelijke inspanning, vooral buiten, en zeker als u klachten hebt.",
    "advice_sensitive_extremely_poor": "Vermijd lichamelijke inspanning buiten.",
    "verdict_basis": "Gemiddelde van het afgelopen uur, tot {time}.",
    "verdict_provisional": "Voorlopig: er is nog geen volledig uur gemeten (nu {minutes} minuten).",
    "verdict_driver": "Bepaald door {quantity}: {value} gemeten door {sensor}.",
    "verdict_waiting": "Nog geen oordeel: de meter moet eerst enkele minuten meten.",
    "verdict_no_working_sensor": "Geen oordeel mogelijk: er is nu geen fijnstof- of stikstofdioxidemeter die goed werkt.",
    "verdict_not_measured": "Deze meter meet geen fijnstof of stikstofdioxide, en geeft daarom geen oordeel over de luchtkwaliteit.",
    "home_ok": "Alles werkt: het meetkastje meet en stuurt de metingen door naar het meetnet.",
    "home_no_uplink": "Het meetkastje meet. Doorsturen naar het meetnet is niet ingesteld.",
    "home_starting": "Het meetkastje start op en wacht op de eerste metingen.",
    "home_sensor_down_one": "Eén sensor meet niet: {names}. Hieronder staat wat u kunt doen.",
    "home_sensor_down_many": "{count} sensoren meten niet: {names}. Hieronder staat wat u kunt doen.",
    "home_sensor_odd": "Onbetrouwbare metingen van: {names}.",
    "home_not_uploading": "Geen verbinding met het meetnet sinds {since}. Er gaat niets verloren: het meetkastje bewaart de metingen en stuurt ze later door. Werkt uw internet (wifi of kabel)?",
    "sensors": "Sensoren",
    "kind_pm": "Fijnstofmeter",
    "kind_no2": "Stikstofdioxidemeter",
    "kind_co2": "CO₂-meter",
    "kind_climate": "Temperatuur en vochtigheid",
    "kind_traffic": "Verkeersteller",
    "kind_wireless": "Draadloze sensor",
    "kind_other": "Sensor",
    "state_ok": "Meet. Laatste meting: {time}.",
    "state_starting": "Start op: wacht op de eerste meting.",
    "state_down_since": "Meet niet meer sinds {time}.",
    "state_down_never": "Er is nog geen enkele meting binnengekomen.",
    "what_to_do": "Wat kunt u doen?",
    "check_cable": "Zit de kabel tussen de sensor en het meetkastje aan beide kanten goed vast? Trek hem eruit en steek hem er opnieuw in.",
    "check_power": "Krijgt de sensor stroom? Kijk of de stekker in het stopcontact zit en of het stopcontact werkt.",
    "check_battery": "Zijn de batterijen van de sensor leeg, of is de stekker eruit?",
    "check_range": "Staat de sensor niet te ver van het meetkastje, of achter een dikke muur?",
    "contact_then": "Helpt dat niet? Neem contact op met {name}.",
    "contact_installer": "Helpt dat niet? Neem contact op met wie deze meter bij u geplaatst heeft.",
    "contact_title": "Vragen of problemen?",
    "contact_who": "Neem contact op met {name}.",
    "contact_fallback": "Neem contact op met wie deze meter bij u geplaatst heeft.",
    "contact_us": "uw contactpersoon",
    "hourly_mean": "uurgemiddelde {value}",
    "hourly_mean_wait": "uurgemiddelde volgt na enkele minuten",
    "last_24h": "Verloop van de laatste 24 uur",
    "value_suspect": "Mogelijk onjuist: {why}",
    "value_fail": "Onbetrouwbaar, telt niet mee: {why}",
    "value_missing": "Ontbreekt: {why}",
    "for_duration": "(al {duration})",
    "test_flat_line": "de waarde verandert niet meer",
    "test_spike": "plotse piek",
    "test_gross_range": "buiten wat de sensor kan meten",
    "test_climatology": "ongewoon voor het seizoen",
    "test_rate_of_change": "verandert ongewoon snel",
    "test_gap": "er ontbreken metingen",
    "test_calibration": "buiten het bereik waarvoor de sensor afgesteld is",
    "test_calibration_range": "buiten het bereik waarvoor de sensor afgesteld is",
    "test_ml_anomaly": "ongewoon verloop",
    "test_anomaly": "ongewoon voor deze sensor",
    "test_colocated": "wijkt af van de sensor ernaast",
    "test_colocated_drift": "loopt weg van de sensor ernaast",
    "test_other": "ongewone meting",
    "q_pm2_5": "Fijnstof PM2,5",
    "q_pm10": "Fijnstof PM10",
    "q_pm1": "Fijnstof PM1",
    "q_pm4": "Fijnstof PM4",
    "q_no2": "Stikstofdioxide (NO₂)",
    "q_o3": "Ozon (O₃)",
    "q_co": "Koolmonoxide (CO)",
    "q_co2": "CO₂",
    "q_temperature": "Temperatuur",
    "q_humidity": "Luchtvochtigheid",
    "q_pressure": "Luchtdruk",
    "q_voc_index": "Geurstoffen (VOC-index)",
    "q_sound_level": "Geluid",
    "q_traffic_count": "Voertuigen",
    "q_car": "Auto's",
    "q_heavy": "Vrachtwagens en bussen",
    "q_bike": "Fietsers",
    "q_pedestrian": "Voetgangers",
    "short_pm2_5": "PM2,5",
    "short_pm10": "PM10",
    "short_no2": "NO₂",
    "above": "boven {value}",
    "legend_title": "Wat betekenen de kleuren?",
    "legend_intro": "Het oordeel volgt de zes klassen van de Europese luchtkwaliteitsindex van het Europees Milieuagentschap. We nemen het gemiddelde van het afgelopen uur, geen losse meting. Meten meerdere sensoren fijnstof of stikstofdioxide, dan telt de slechtste klasse.",
    "legend_ranges": "Grenzen in µg/m³",
    "legend_note": "Dit is een aanwijzing, gemeten met eenvoudige sensoren. Het is geen officiële meting.",
    "tech_link": "Voor de technicus",
    "dash": "–",
}

_HOST_EN: dict[str, str] = {
    "page_title": "Air quality",
    "site_unnamed": "Air monitor",
    "switch_language": "Language",
    "air_now": "Air quality now",
    "band_good": "Good",
    "band_fair": "Fair",
    "band_moderate": "Moderate",
    "band_poor": "Poor",
    "band_very_poor": "Very poor",
    "band_extremely_poor": "Extremely poor",
    "advice_good": "The air is good. Enjoy your usual outdoor activities.",
    "advice_fair": "The air is fine for your usual outdoor activities.",
    "advice_moderate": "You can carry on with your usual outdoor activities.",
    "advice_poor": "If your eyes sting, or you cough or have a sore throat, take it easier outdoors, above all with heavy exercise.",
    "advice_very_poor": "If you have sore eyes, a cough or a sore throat, cut down on heavy exercise outdoors.",
    "advice_extremely_poor": "Cut down on physical exertion outdoors.",
    "sensitive": "Sensitive people (asthma, heart or lung disease, children, older people)",
    "advice_sensitive_good": "No precautions needed.",
    "advice_sensitive_fair": "No precautions needed.",
    "advice_sensitive_moderate": "If you have symptoms, consider less heavy exercise outdoors.",
    "advice_sensitive_poor": "Consider less physical exertion, above all outdoors, and certainly if you have symptoms.",
    "advice_sensitive_very_poor": "Cut down on physical exertion, above all outdoors, and certainly if you have symptoms.",
    "advice_sensitive_extremely_poor": "Avoid physical exertion outdoors.",
    "verdict_basis": "Mean of the past hour, up to {time}.",
    "verdict_provisional": "Provisional: a full hour has not been measured yet ({minutes} minutes so far).",
    "verdict_driver": "Set by {quantity}: {value} measured by {sensor}.",
    "verdict_waiting": "No verdict yet: the monitor first needs a few minutes of measurements.",
    "verdict_no_working_sensor": "No verdict possible: no particulate or nitrogen dioxide sensor is working right now.",
    "verdict_not_measured": "This monitor does not measure particulate matter or nitrogen dioxide, so it gives no air quality verdict.",
    "home_ok": "Everything works: the monitor measures and sends its measurements to the network.",
    "home_no_uplink": "The monitor measures. Sending to the network is not set up.",
    "home_starting": "The monitor is starting and waits for the first measurements.",
    "home_sensor_down_one": "One sensor is not measuring: {names}. See below what you can do.",
    "home_sensor_down_many": "{count} sensors are not measuring: {names}. See below what you can do.",
    "home_sensor_odd": "Unreliable measurements from: {names}.",
    "home_not_uploading": "No connection to the network since {since}. Nothing is lost: the monitor keeps the measurements and sends them later. Is your internet (Wi-Fi or cable) working?",
    "sensors": "Sensors",
    "kind_pm": "Particulate sensor",
    "kind_no2": "Nitrogen dioxide sensor",
    "kind_co2": "CO₂ sensor",
    "kind_climate": "Temperature and humidity",
    "kind_traffic": "Traffic counter",
    "kind_wireless": "Wireless sensor",
    "kind_other": "Sensor",
    "state_ok": "Measuring. Last measurement: {time}.",
    "state_starting": "Starting: waiting for the first measurement.",
    "state_down_since": "Not measuring since {time}.",
    "state_down_never": "No measurement has arrived yet.",
    "what_to_do": "What can you do?",
    "check_cable": "Is the cable between the sensor and the monitor plugged in firmly at both ends? Unplug it and plug it in again.",
    "check_power": "Does the sensor get power? Check that the plug is in and the socket works.",
    "check_battery": "Are the sensor's batteries flat, or is it unplugged?",
    "check_range": "Is the sensor too far from the monitor, or behind a thick wall?",
    "contact_then": "Still not working? Contact {name}.",
    "contact_installer": "Still not working? Contact whoever installed this monitor for you.",
    "contact_title": "Questions or problems?",
    "contact_who": "Contact {name}.",
    "contact_fallback": "Contact whoever installed this monitor for you.",
    "contact_us": "your contact person",
    "hourly_mean": "hourly mean {value}",
    "hourly_mean_wait": "hourly mean after a few minutes",
    "last_24h": "The last 24 hours",
    "value_suspect": "Possibly wrong: {why}",
    "value_fail": "Unreliable, not counted: {why}",
    "value_missing": "Missing: {why}",
    "for_duration": "(for {duration})",
    "test_flat_line": "the value has stopped changing",
    "test_spike": "sudden spike",
    "test_gross_range": "outside what the sensor can measure",
    "test_climatology": "unusual for the season",
    "test_rate_of_change": "changing unusually fast",
    "test_gap": "measurements are missing",
    "test_calibration": "outside the range the sensor was adjusted for",
    "test_calibration_range": "outside the range the sensor was adjusted for",
    "test_ml_anomaly": "unusual pattern",
    "test_anomaly": "unusual for this sensor",
    "test_colocated": "disagrees with the sensor next to it",
    "test_colocated_drift": "drifting away from the sensor next to it",
    "test_other": "unusual measurement",
    "q_pm2_5": "Particulate matter PM2.5",
    "q_pm10": "Particulate matter PM10",
    "q_pm1": "Particulate matter PM1",
    "q_pm4": "Particulate matter PM4",
    "q_no2": "Nitrogen dioxide (NO₂)",
    "q_o3": "Ozone (O₃)",
    "q_co": "Carbon monoxide (CO)",
    "q_co2": "CO₂",
    "q_temperature": "Temperature",
    "q_humidity": "Humidity",
    "q_pressure": "Air pressure",
    "q_voc_index": "Odours (VOC index)",
    "q_sound_level": "Sound",
    "q_traffic_count": "Vehicles",
    "q_car": "Cars",
    "q_heavy": "Lorries and buses",
    "q_bike": "Cyclists",
    "q_pedestrian": "Pedestrians",
    "short_pm2_5": "PM2.5",
    "short_pm10": "PM10",
    "short_no2": "NO₂",
    "above": "above {value}",
    "legend_title": "What do the colours mean?",
    "legend_intro": "The verdict follows the six bands of the European Air Quality Index of the European Environment Agency. It uses the mean of the past hour, not a single reading. When several sensors measure particulate matter or nitrogen dioxide, the worst band counts.",
    "legend_ranges": "Limits in µg/m³",
    "legend_note": "This is an indication measured with simple sensors. It is not an official measurement.",
    "tech_link": "For the technician",
    "dash": "–",
}

# Technician page (rendered by app.js): technical words are at home here.
_TECH_NL: dict[str, str] = {
    "tech_title": "Meetkastje — technische weergave",
    "status_ok": "Alles in orde: meet en verstuurt.",
    "status_starting": "Opstarten: wacht op de eerste metingen.",
    "status_sensor_problem": "Probleem met sensor: {sensors}.",
    "status_not_uploading": "Verstuurt niet sinds {since}; metingen blijven in de buffer bewaard.",
    "status_no_uplink": "Meet; versturen is niet ingesteld.",
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
    "ingest_rate": "Metingen per seconde",
    "uplink": "Verbinding",
    "last_confirmed": "Laatste bevestigde upload",
    "confirmed": "Bevestigd",
    "rejected": "Geweigerd",
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
    "home_link": "Pagina voor de bewoner",
    "never": "nooit",
    "ago": "{age} geleden",
    "actions": "Acties (token nodig)",
    "actions_off": "Acties staan uit: stel web.token_file in om een bron te herstarten of nu te versturen.",
    "restart": "Herstarten",
    "upload_now": "Nu versturen",
    "token": "Token",
}

_TECH_EN: dict[str, str] = {
    "tech_title": "Monitor — technician view",
    "status_ok": "All good: measuring and uploading.",
    "status_starting": "Starting up: waiting for the first measurements.",
    "status_sensor_problem": "Sensor problem: {sensors}.",
    "status_not_uploading": "Not uploading since {since}; measurements are kept in the buffer.",
    "status_no_uplink": "Measuring; no upload configured.",
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
    "ingest_rate": "Observations per second",
    "uplink": "Uplink",
    "last_confirmed": "Last confirmed upload",
    "confirmed": "Confirmed",
    "rejected": "Rejected",
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
    "home_link": "Host page",
    "never": "never",
    "ago": "{age} ago",
    "actions": "Actions (need the token)",
    "actions_off": "Actions are off: set web.token_file to restart a source or upload now.",
    "restart": "Restart",
    "upload_now": "Upload now",
    "token": "Token",
}

TEXTS: dict[str, dict[str, str]] = {
    "nl": {**_HOST_NL, **_TECH_NL},
    "en": {**_HOST_EN, **_TECH_EN},
}
TECH_KEYS: Final = tuple(_TECH_EN)  # the texts the technician page's script gets

_MONTHS = {
    "nl": ("jan", "feb", "mrt", "apr", "mei", "jun", "jul", "aug", "sep", "okt", "nov", "dec"),
    "en": ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
}
_DAYS = {
    "nl": ("ma", "di", "wo", "do", "vr", "za", "zo"),
    "en": ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"),
}


def text(lang: str, key: str, **values: object) -> str:
    """The text for ``key`` in ``lang`` with its ``{name}`` placeholders filled in."""
    template = TEXTS[lang].get(key) or TEXTS[DEFAULT][key]
    return template.format(**values) if values else template


def when(ms: int, lang: str, *, seconds: bool = False) -> str:
    """A moment with its date, in the gateway's time zone: 'vr 5 dec 2025, 14:32'."""
    moment = dt.datetime.fromtimestamp(ms / 1000).astimezone()
    clock = moment.strftime("%H:%M:%S" if seconds else "%H:%M")
    day = _DAYS[lang][moment.weekday()]
    return f"{day} {moment.day} {_MONTHS[lang][moment.month - 1]} {moment.year}, {clock}"


def number(value: float, lang: str) -> str:
    """One decimal under 100, none from 100 up; a decimal comma in Dutch."""
    shown = f"{value:.0f}" if abs(value) >= 100 else f"{value:.1f}"
    return shown.replace(".", ",") if lang == "nl" else shown


def duration(seconds: float, lang: str) -> str:
    s = max(0, round(seconds))
    if s < 90:
        return f"{s} s"
    if s < 5400:
        return f"{round(s / 60)} min"
    if s < 172800:
        hours = f"{s / 3600:.1f}".removesuffix(".0")
        return (hours.replace(".", ",") if lang == "nl" else hours) + (" u" if lang == "nl" else " h")
    days = round(s / 86400)
    return f"{days} " + ("dagen" if lang == "nl" else "days")


def pick_language(accept_language: str | None, override: str | None = None) -> str:
    """The best of our languages for an Accept-Language header (``override`` wins if valid)."""
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
