"""The host page: what a non-technical host sees, built from the gateway's state and rendered
server-side (Jinja2, autoescaped) in Dutch or English.

:func:`build` turns the view into a language-neutral :class:`HomeModel` (tested on its own);
:class:`HomePage` renders it. The page names sensors by their configured ``label`` or by
what they measure, never by config ids; a sensor that stopped is greyed out with what to
check and whom to call; the air verdict comes from :mod:`edge.web.air`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jinja2

from edge import plugins
from edge.model import QC_FAIL, QC_MISSING, QC_SUSPECT
from edge.quantities import QUANTITIES
from edge.web import air, eaqi, i18n
from edge.web.settings import WebSettings
from edge.web.state import StreamState

if TYPE_CHECKING:
    from edge.web.view import GatewayView

# What the host sees, in this order; everything else is for the technician page and the API.
HOST_QUANTITIES = (
    "pm2_5", "pm10", "pm1", "pm4", "no2", "o3", "co", "co2", "temperature", "humidity",
    "pressure", "voc_index", "sound_level", "traffic_count", "car", "heavy", "bike", "pedestrian",
)
# How a sensor is named when it has no label, from what it measures (first match wins).
_KINDS = (
    ("pm", ("pm2_5", "pm10", "pm1", "pm4")),
    ("no2", ("no2",)),
    ("co2", ("co2",)),
    ("traffic", ("traffic_count", "car", "heavy", "bike", "pedestrian")),
    ("climate", ("temperature", "humidity")),
)
_WIRELESS_TYPES = frozenset({"ble", "node_ble"})
_MULTI_DEVICE_TYPES = frozenset({"ble", "node_serial", "node_ble"})  # sensor ids ≠ source name
_FLAGS = {QC_SUSPECT: "suspect", QC_FAIL: "fail", QC_MISSING: "missing"}
SPARK_HEIGHT = 30
SPARK_POINTS = 120


@dataclass(frozen=True, slots=True)
class Problem:
    flag: str  # suspect | fail | missing
    test: str
    for_s: float | None


@dataclass(frozen=True, slots=True)
class ValueRow:
    quantity: str
    value: float
    unit: str
    banded: bool  # the quantity has EAQI bands: show the hourly mean and its band
    hourly: air.HourlyMean | None
    problems: tuple[Problem, ...]
    points: str  # SVG polyline points of the last 24 h ("" with fewer than two)


@dataclass(frozen=True, slots=True)
class SensorCard:
    key: str  # the sensor id: an HTML attribute for tests, never shown
    label: str
    kind: str
    model: str
    state: str  # ok | starting | down
    last_ms: int | None
    wireless: bool | None  # None: not known
    rows: tuple[ValueRow, ...]

    @property
    def odd(self) -> bool:
        return any(p.flag == "fail" for row in self.rows for p in row.problems)


@dataclass(frozen=True, slots=True)
class Contact:
    name: str
    email: str
    phone: str
    url: str

    @classmethod
    def of(cls, settings: WebSettings) -> Contact:
        return cls(settings.contact_name, settings.contact_email, settings.contact_phone,
                   settings.contact_url)

    def __bool__(self) -> bool:
        return any((self.name, self.email, self.phone, self.url))


@dataclass(frozen=True, slots=True)
class HomeModel:
    site_name: str
    at_ms: int
    verdict: air.Verdict
    status: str  # ok | no_uplink | starting | not_uploading
    not_uploading_since_ms: int | None
    cards: tuple[SensorCard, ...]
    contact: Contact

    @property
    def down(self) -> list[SensorCard]:
        return [c for c in self.cards if c.state == "down"]

    def as_dict(self) -> dict[str, Any]:
        """Language-neutral JSON for /api/home."""
        v = self.verdict
        return {
            "site_name": self.site_name,
            "now_ms": self.at_ms,
            "verdict": {
                "state": v.state,
                "band": v.band,
                "means": [
                    {"sensor": m.sensor, "quantity": m.quantity, "mean": round(m.mean, 2),
                     "coverage": round(m.coverage, 3), "band": m.band}
                    for m in v.means
                ],
            },
            "status": self.status,
            "not_uploading_since_ms": self.not_uploading_since_ms,
            "sensors": [
                {"sensor": c.key, "label": c.label or None, "kind": c.kind, "model": c.model or None,
                 "state": c.state, "last_ms": c.last_ms}
                for c in self.cards
            ],
        }


# ---------------------------------------------------------------------------------- build
def build(view: GatewayView, at_ms: int, down_since: int | None) -> HomeModel:
    """Everything the host page shows at ``at_ms`` (no language yet); ``down_since``: when
    uploading stopped, None while it works."""
    gw = view.gateway
    verdict = view.judge.judge(
        view.live, at_ms,
        working=lambda sensor: not view.sensor_down(sensor, at_ms),
        expected=view.expected_buckets,
        pollutant_sources=view.pollutant_sources(),
    )
    counted = {(m.sensor, m.quantity): m for m in verdict.means}
    cards = tuple(_cards(view, at_ms, counted))
    if down_since is not None:
        status = "not_uploading"
    elif not view.live.streams:
        status = "starting"
    else:
        status = "ok" if gw.uplink_health else "no_uplink"
    return HomeModel(
        site_name=gw.config.gateway.name,
        at_ms=at_ms,
        verdict=verdict,
        status=status,
        not_uploading_since_ms=down_since,
        cards=cards,
        contact=Contact.of(view.settings),
    )


def _cards(view: GatewayView, at_ms: int, counted: dict[tuple[str, str], air.HourlyMean]) -> list[SensorCard]:
    """One card per sensor id seen, plus configured sources not heard from, in config order."""
    by_sensor: dict[str, list[StreamState]] = {}
    for st in view.live.streams.values():
        by_sensor.setdefault(st.sensor, []).append(st)
    order = {s.name: i for i, s in enumerate(view.gateway.config.sources)}
    keys: list[tuple[int, str]] = []
    per_source: dict[str, int] = {}
    for sensor in by_sensor:
        source = view.source_of(sensor)
        keys.append((order[source] if source else len(order), sensor))
        if source:
            per_source[source] = per_source.get(source, 0) + 1
    for name, source in view.sources.items():
        if name not in per_source and (
            source.type not in _MULTI_DEVICE_TYPES or view.sensor_down(name, at_ms)
        ):
            keys.append((order[name], name))
    cards = []
    for _, sensor in sorted(keys):
        source = view.source_of(sensor)
        sole = source is not None and per_source.get(source, 0) <= 1
        cards.append(_card(view, sensor, by_sensor.get(sensor, []), at_ms, counted, sole=sole))
    return cards


def _card(view: GatewayView, sensor: str, streams: list[StreamState], at_ms: int,
          counted: dict[tuple[str, str], air.HourlyMean], *, sole: bool) -> SensorCard:
    """``sole``: the only sensor of its source, so the source's label names it."""
    source_name = view.source_of(sensor)
    source = view.sources.get(source_name) if source_name else None
    descriptor = _descriptor(source.type) if source else None
    shown = sorted((s for s in streams if s.quantity in HOST_QUANTITIES),
                   key=lambda s: HOST_QUANTITIES.index(s.quantity))
    quantities = [s.quantity for s in streams] or list(descriptor[1] if descriptor else ())
    model = next((s.provenance.sensor_model for s in streams if s.provenance.sensor_model), "")
    if not model and descriptor:
        model = descriptor[0]
    down = view.sensor_down(sensor, at_ms)
    last = view.sensor_last_ms(sensor)
    state = "down" if down else ("ok" if streams else "starting")
    label = source.label if source is not None and sole else ""
    return SensorCard(
        key=sensor,
        label=label,
        kind=_source_kind(quantities, source.type if source else None),
        model=model,
        state=state,
        last_ms=last,
        wireless=None if source is None else source.type in _WIRELESS_TYPES,
        rows=tuple(_row(view, st, at_ms, counted) for st in shown),
    )


def _descriptor(type_name: str) -> tuple[str, tuple[str, ...]] | None:
    """(model, quantities) of a sensor type from the codec registry, when it has one."""
    sensor = plugins.sensors().get(type_name)
    return None if sensor is None else (sensor.descriptor.model, sensor.descriptor.quantities)


def _kind(quantities: list[str]) -> str:
    for kind, codes in _KINDS:
        if any(q in codes for q in quantities):
            return kind
    return "other"


def _source_kind(quantities: list[str], source_type: str | None) -> str:
    kind = _kind(quantities)
    return "wireless" if kind == "other" and source_type in _WIRELESS_TYPES else kind


def _row(view: GatewayView, st: StreamState, at_ms: int,
         counted: dict[tuple[str, str], air.HourlyMean]) -> ValueRow:
    q = QUANTITIES.get(st.quantity)
    hourly = counted.get((st.sensor, st.quantity))
    if hourly is None and eaqi.has_band(st.quantity) and not view.sensor_down(st.sensor, at_ms):
        hourly = view.judge.mean_of(st, at_ms, view.live.bucket_ms, view.expected_buckets(st.sensor))
    problems = []
    if st.quality is not None:
        for test, flag in sorted(st.quality.tests.items()):
            if flag in _FLAGS:
                since = st.flagged_since.get(test)
                problems.append(Problem(_FLAGS[flag], test, None if since is None else (at_ms - since) / 1000))
    return ValueRow(
        quantity=st.quantity,
        value=st.value,
        unit=q.unit_symbol if q else "",
        banded=eaqi.has_band(st.quantity),
        hourly=hourly,
        problems=tuple(problems),
        points=spark_points(st),
    )


def spark_points(st: StreamState) -> str:
    """The 24 h chart as SVG polyline points in a 100 × 30 box (bucket means, then latest).

    At most :data:`SPARK_POINTS` points (neighbouring buckets merged), so that the part of
    the page refreshed every second stays small with a day of one-minute buckets.
    """
    buckets = list(st.buckets)
    step = max(1, -(-len(buckets) // SPARK_POINTS))
    pts = []
    for i in range(0, len(buckets), step):
        group = buckets[i : i + step]
        total, count = sum(b.total for b in group), sum(b.count for b in group)
        pts.append((float(group[0].start_ms), total / count))
    if st.value == st.value:  # not NaN
        pts.append((float(st.time_ms), st.value))
    if len(pts) < 2:
        return ""
    t0, t1 = pts[0][0], max(p[0] for p in pts)
    lo, hi = min(p[1] for p in pts), max(p[1] for p in pts)
    if hi - lo < 1e-9:
        lo, hi = lo - 1, hi + 1
    span = t1 - t0 or 1.0
    return " ".join(
        f"{(t - t0) / span * 100:.1f},{SPARK_HEIGHT - 2 - (v - lo) / (hi - lo) * (SPARK_HEIGHT - 4):.1f}"
        for t, v in pts
    )


# ---------------------------------------------------------------------------------- render
def display_names(cards: tuple[SensorCard, ...], lang: str) -> dict[str, str]:
    """Sensor id → the name the host reads: the label, else kind (model), numbered if twice."""
    names = {}
    for card in cards:
        if card.label:
            names[card.key] = card.label
        else:
            kind = i18n.text(lang, "kind_" + card.kind)
            names[card.key] = f"{kind} ({card.model})" if card.model else kind
    seen: dict[str, int] = {}
    for name in names.values():
        seen[name] = seen.get(name, 0) + 1
    counters: dict[str, int] = {}
    for key, name in list(names.items()):
        if seen[name] > 1:
            counters[name] = counters.get(name, 0) + 1
            names[key] = f"{name} {counters[name]}"
    return names


class HomePage:
    """Renders the host page (whole page, or the part the page refreshes) in one language."""

    def __init__(self, settings: WebSettings) -> None:
        self.settings = settings
        self.env = jinja2.Environment(
            loader=jinja2.PackageLoader("edge.web", "templates"),
            autoescape=True,
            trim_blocks=True,
            lstrip_blocks=True,
            undefined=jinja2.StrictUndefined,
        )

    def render(self, model: HomeModel, lang: str, *, fragment: bool = False) -> str:
        template = self.env.get_template("home_main.html" if fragment else "home.html")
        return template.render(self._context(model, lang))

    def _context(self, model: HomeModel, lang: str) -> dict[str, Any]:
        def t(key: str, **values: object) -> str:
            return i18n.text(lang, key, **values)

        def when(ms: int | None, seconds: bool = False) -> str:
            return i18n.when(ms, lang, seconds=seconds) if ms else t("dash")

        def num(value: float) -> str:
            return i18n.number(value, lang)

        def why(problem: Problem) -> str:
            test = problem.test if "test_" + problem.test in i18n.TEXTS[lang] else "other"
            text = t("value_" + problem.flag, why=t("test_" + test))
            if problem.for_s and problem.for_s >= 60:
                text += " " + t("for_duration", duration=i18n.duration(problem.for_s, lang))
            return text

        def range_text(bounds: tuple[float, float | None]) -> str:
            low, high = bounds
            return t("above", value=num_int(low)) if high is None else f"{num_int(low)}–{num_int(high)}"

        def quantity_name(code: str) -> str:
            return t("q_" + code)

        def in_sentence(name: str) -> str:
            """'Fijnstof PM10' → 'fijnstof PM10' mid-sentence; 'CO₂' stays."""
            return name[:1].lower() + name[1:] if name[1:2].islower() else name

        names = display_names(model.cards, lang)
        legend = [
            {"band": band, "ranges": {q: eaqi.ranges(q)[level] for q in eaqi.QUANTITIES}}
            for level, band in enumerate(eaqi.BANDS)
        ]
        coverage = min((m.coverage for m in model.verdict.means), default=0.0)
        return {
            "m": model,
            "lang": lang,
            "languages": i18n.LANGUAGES,
            "t": t,
            "when": when,
            "num": num,
            "why": why,
            "names": names,
            "quantity_name": quantity_name,
            "in_sentence": in_sentence,
            "legend": legend,
            "refresh_ms": int(max(1.0, self.settings.refresh_s) * 1000),
            "site": model.site_name or t("site_unnamed"),
            "odd": [names[c.key] for c in model.cards if c.odd and c.state != "down"],
            "down_names": ", ".join(names[c.key] for c in model.down),
            "bands": eaqi.BANDS,
            "range_text": range_text,
            "provisional_minutes": round(coverage * 60),
            "contact_name": model.contact.name or t("contact_us"),
        }


def num_int(value: float) -> str:
    return f"{value:g}"
