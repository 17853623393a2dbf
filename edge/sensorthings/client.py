"""OGC SensorThings API v1.1 over HTTP: the client the gateway's uplink and the twin's forwarder share.

Observations go up with ``POST {base}/CreateObservations`` (dataArray extension), one group
per Datastream. The per-row answer decides each observation's fate:

- a self link → confirmed;
- ``"error"`` → retried once on its own with ``POST {base}/Observations`` (Datastream linked
  in the body; ``POST Datastreams(id)/Observations`` is not accepted by every server):
  2xx or 409 (already there) → confirmed, other 4xx → rejected with the server's reason
  (the outbox dead-letters it), 5xx / network → left pending, retried later in order.

A failure of the whole request (network, 5xx, 401/403, 408, 429) raises
:class:`SensorThingsUnavailable` so the runtime retries the batch with backoff — unless part
of the batch was already settled, in which case the partial :class:`~edge.model.Delivery` is
returned (re-sending settled rows would duplicate them).

Servers that reject interval ``phenomenonTime`` are handled by ``phenomenon_interval``:
``"end_instant"`` always sends the end instant (the interval goes into
``parameters.phenomenonInterval``); ``"auto"`` sends intervals until the server refuses one
that it accepts as an end instant, then degrades (remembered in the registry file).

Datastreams are registered on first use by :class:`DatastreamRegistry`, which finds or
creates Thing, Sensor, ObservedProperty and Datastream (found by name, checked by
``properties.duetKey``) and caches their ids in a JSON file in the gateway's data dir.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import ssl
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from edge import sensorthings as sta
from edge.model import Datastream, Delivery, Observation, observation_id
from edge.sensorthings import EntityId, GeoPoint, IntervalMode, JsonObject
from edge.sensorthings.auth import (
    AuthConfigError,
    AuthUnavailable,
    BearerFileAuth,
    ClientCredentialsAuth,
    env_or_file_secret,
)
from edge.sensorthings.settings import (
    SensorThingsHttpSettings,
    StaTlsSettings,
)

log = logging.getLogger(__name__)

_REASON_MAX = 300
_TRANSIENT_4XX = frozenset({401, 403, 407, 408, 425, 429})
_NO_DATA_ARRAY = frozenset({404, 405, 501})


# ---------------------------------------------------------------------------------------
# Settings


class SensorThingsUnavailable(Exception):
    """The server cannot take data now (network, 5xx, auth, throttling): retry with backoff."""


class SensorThingsConfigError(Exception):
    """A local setting is unusable (missing credential file or variable...)."""


class _Rejected(Exception):
    """A permanent refusal (4xx) of one entity or row; the message is the reason."""


def _reason(response: httpx.Response) -> str:
    text = response.text.strip().replace("\n", " ")
    if len(text) > _REASON_MAX:
        text = text[: _REASON_MAX - 3] + "..."
    return f"HTTP {response.status_code}: {text}" if text else f"HTTP {response.status_code}"


def _is_server_failure(outcome: str) -> bool:
    return outcome.startswith(("HTTP 5", "transport"))


def _is_transient(status: int) -> bool:
    return status >= 500 or status in _TRANSIENT_4XX


# ---------------------------------------------------------------------------------------
# HTTP client construction


def _read_secret(file: Path | None, env: str | None, what: str) -> str:
    try:
        return env_or_file_secret(file, env, what)()
    except AuthConfigError as exc:
        raise SensorThingsConfigError(str(exc)) from None


def build_http_client(
    settings: SensorThingsHttpSettings,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` with auth, headers, TLS and timeouts applied (secrets checked
    now: a missing file is a :class:`SensorThingsConfigError` at start, not at first use)."""
    headers = {"Accept": "application/json", "User-Agent": "duet-edge", **settings.headers}
    auth: httpx.Auth | None = None
    a = settings.auth
    timeout = httpx.Timeout(settings.timeout_s, connect=settings.connect_timeout_s)
    kwargs: dict[str, Any] = {"timeout": timeout}
    if transport is not None:
        kwargs["transport"] = transport
    else:
        kwargs["verify"] = ssl_context(settings.tls)
    try:
        if a.type == "bearer" and a.token_file is not None:
            bearer = BearerFileAuth(a.token_file)
            bearer.check()
            auth = bearer
        elif a.type == "bearer":
            headers["Authorization"] = "Bearer " + _read_secret(None, a.token_env, "token")
        elif a.type == "basic":
            assert a.username is not None
            auth = httpx.BasicAuth(a.username, _read_secret(a.password_file, a.password_env,
                                                            "password"))
        elif a.type == "oauth2":
            assert a.token_url is not None and a.client_id is not None
            secret = env_or_file_secret(a.client_secret_file, a.client_secret_env,
                                        "client secret")
            secret()  # fail now when it cannot be read
            auth = ClientCredentialsAuth(a.token_url, a.client_id, secret, a.scope,
                                         lambda: httpx.AsyncClient(**kwargs))
    except AuthConfigError as exc:
        raise SensorThingsConfigError(str(exc)) from None
    return httpx.AsyncClient(headers=headers, auth=auth, **kwargs)


def ssl_context(tls: StaTlsSettings | None) -> ssl.SSLContext:
    """The TLS context for https base URLs (system trust store unless ``ca_file`` is set)."""
    cafile = str(tls.ca_file) if tls is not None and tls.ca_file is not None else None
    ctx = ssl.create_default_context(cafile=cafile)
    if tls is None:
        return ctx
    if tls.cert_file is not None:
        ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file) if tls.key_file else None)
    if not tls.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


# ---------------------------------------------------------------------------------------
# Datastream registry


class DatastreamRegistry:
    """Finds or creates the SensorThings entities behind our Datastreams; caches their ids.

    Lookups go by ``name`` (every server filters on it) and are confirmed by
    ``properties.duetKey``; ObservedProperties are shared and found by ``definition``. The
    cache file maps keys to ids per server URL, so pointing a gateway at another server
    never reuses stale ids.
    """

    _KINDS = ("things", "sensors", "observedProperties", "datastreams")

    def __init__(self, http: httpx.AsyncClient, base_url: str, path: Path | None) -> None:
        self._http = http
        self._base = base_url.rstrip("/")
        self._path = path
        self._lock = asyncio.Lock()
        self.quirks: dict[str, bool] = {}
        self.located: set[str] = set()  # gateways whose Thing has a Location on the server
        self._ids: dict[str, dict[str, EntityId]] = self._load()

    # -- cache file ------------------------------------------------------------------

    def _load(self) -> dict[str, dict[str, EntityId]]:
        empty: dict[str, dict[str, EntityId]] = {k: {} for k in self._KINDS}
        if self._path is None or not self._path.exists():
            return empty
        try:
            data = json.loads(self._path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable SensorThings id cache %s: %s", self._path, exc)
            return empty
        if not isinstance(data, dict) or data.get("server") != self._base:
            return empty
        located = data.get("located")
        if isinstance(located, list):
            self.located = {str(g) for g in located}
        quirks = data.get("quirks")
        if isinstance(quirks, dict):
            self.quirks = {str(k): v for k, v in quirks.items() if isinstance(v, bool)}
        for kind in self._KINDS:
            entries = data.get(kind)
            if isinstance(entries, dict):
                empty[kind] = {str(k): v for k, v in entries.items() if isinstance(v, str | int)}
        return empty

    def _save(self) -> None:
        if self._path is None:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._path.with_name(f".{self._path.name}.tmp-{os.getpid()}")
        data = {"server": self._base, "quirks": self.quirks, "located": sorted(self.located),
                **self._ids}
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self._path)

    def remember_quirk(self, name: str) -> None:
        """Record a server limitation (``noIntervals``, ``noDataArray``) for later runs."""
        if not self.quirks.get(name):
            self.quirks[name] = True
            self._save()

    def cached(self, stream: Datastream) -> EntityId | None:
        return self._ids["datastreams"].get(sta.datastream_key(stream))

    def forget(self, stream: Datastream) -> None:
        """Drop a Datastream id (e.g. deleted on the server); it is looked up again next time."""
        if self._ids["datastreams"].pop(sta.datastream_key(stream), None) is not None:
            self._save()

    def forget_sensor(self, stream: Datastream) -> None:
        """Drop the cached Sensor id of a stream's source (its sensor was swapped)."""
        if self._ids["sensors"].pop(sta.sensor_key(stream), None) is not None:
            self._save()

    @property
    def ids(self) -> Mapping[str, Mapping[str, EntityId]]:
        return self._ids

    # -- public API ------------------------------------------------------------------

    async def ensure_datastreams(
        self,
        streams: Iterable[tuple[Datastream, str]],
        location: GeoPoint | None = None,
    ) -> dict[Datastream, EntityId]:
        """Datastream ids for ``(stream, sensor_model)`` pairs, registering what is missing.

        Raises :class:`SensorThingsUnavailable` on transient errors and ``_Rejected``
        (via :meth:`ensure`) when the server refuses an entity.
        """
        out: dict[Datastream, EntityId] = {}
        for stream, model in streams:
            if stream not in out:
                out[stream] = await self.ensure(stream, model, location)
        return out

    async def ensure(
        self, stream: Datastream, sensor_model: str = "", location: GeoPoint | None = None
    ) -> EntityId:
        if location is not None and stream.gateway_id not in self.located:
            thing_id = self._ids["things"].get(sta.thing_key(stream.gateway_id))
            if thing_id is not None:  # known Thing, maybe created before its location was
                async with self._lock:
                    await self._ensure_location(thing_id, stream.gateway_id, location)
        cached = self.cached(stream)
        if cached is not None:
            return cached
        async with self._lock:
            cached = self.cached(stream)
            if cached is not None:
                return cached
            if location is None and sta.thing_key(stream.gateway_id) not in self._ids["things"]:
                log.warning("gateway %s has no location: servers that derive FeatureOfInterest "
                            "from the Thing's Location will refuse its observations",
                            stream.gateway_id)
            thing = await self._find_or_create(
                "things", "Things", sta.thing_key(stream.gateway_id), "name",
                stream.gateway_id, lambda: sta.thing_body(stream.gateway_id, location))
            if location is not None:
                await self._ensure_location(thing, stream.gateway_id, location)
            sensor = await self._find_or_create(
                "sensors", "Sensors", sta.sensor_key(stream), "name", sta.sensor_key(stream),
                lambda: sta.sensor_body(stream, sensor_model))
            q = stream.quantity
            prop = await self._find_or_create(
                "observedProperties", "ObservedProperties", sta.observed_property_key(q),
                "definition", q.uri, lambda: sta.observed_property_body(q), shared=True)
            ds = await self._find_or_create(
                "datastreams", "Datastreams", sta.datastream_key(stream), "name",
                sta.datastream_key(stream),
                lambda: sta.datastream_body(stream, thing, sensor, prop))
            return ds

    # -- internals -------------------------------------------------------------------

    async def _ensure_location(self, thing: EntityId, gateway_id: str,
                               location: GeoPoint) -> None:
        """Give a Thing its Location if it has none (a Thing registered before its gateway's
        position was known: servers refuse its observations until it has one)."""
        if gateway_id in self.located:
            return
        url = f"{self._base}/{sta.entity_path('Things', thing)}/Locations"
        response = await _request(self._http, "GET", url, params={"$top": "1"})
        has_one = response.status_code == 200 and bool(response.json().get("value"))
        if not has_one:
            body = {**sta.location_body(gateway_id, location), "Things": [{"@iot.id": thing}]}
            created = await _request(self._http, "POST", f"{self._base}/Locations", json=body)
            if created.status_code not in (200, 201):
                log.warning("could not add a Location to Thing %s of %s: %s", thing,
                            gateway_id, _reason(created))
                return
            log.info("added the Location of gateway %s to its Thing %s", gateway_id, thing)
        self.located.add(gateway_id)
        self._save()

    async def _find_or_create(
        self,
        kind: str,
        set_name: str,
        key: str,
        field: str,
        value: str,
        body: Any,
        shared: bool = False,
    ) -> EntityId:
        known = self._ids[kind].get(key)
        if known is not None:
            return known
        found = await self._find(set_name, key, field, value, shared)
        entity_id = found if found is not None else await self._create(set_name, body())
        self._ids[kind][key] = entity_id
        self._save()
        return entity_id

    async def _find(
        self, set_name: str, key: str, field: str, value: str, shared: bool
    ) -> EntityId | None:
        params = {"$filter": f"{field} eq {sta.odata_string(value)}", "$top": "100"}
        response = await _request(self._http, "GET", f"{self._base}/{set_name}", params=params)
        if response.status_code != 200:
            raise _Rejected(f"cannot search {set_name}: {_reason(response)}")
        entities = response.json().get("value", [])
        fallback: EntityId | None = None
        for entity in entities:
            props = entity.get("properties") or {}
            if props.get("duetKey") == key:
                return _entity_id(entity)
            if shared and fallback is None:
                fallback = _entity_id(entity)
        return fallback

    async def _create(self, set_name: str, body: JsonObject) -> EntityId:
        response = await _request(self._http, "POST", f"{self._base}/{set_name}", json=body)
        if response.status_code not in (200, 201):
            raise _Rejected(f"cannot create {set_name} {body.get('name')!r}: {_reason(response)}")
        link = response.headers.get("location")
        if link:
            return sta.id_from_link(link)
        with contextlib.suppress(ValueError):
            return _entity_id(response.json())
        raise _Rejected(f"{set_name}: server answered {response.status_code} without an id")


def _entity_id(entity: Mapping[str, Any]) -> EntityId:
    value = entity.get("@iot.id")
    if isinstance(value, str | int) and not isinstance(value, bool):
        return value
    raise ValueError(f"entity without @iot.id: {entity!r:.200}")


async def _request(http: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> httpx.Response:
    """One request; transport failures and transient statuses raise SensorThingsUnavailable."""
    try:
        response = await http.request(method, url, **kwargs)
    except httpx.TransportError as exc:
        raise SensorThingsUnavailable(f"{method} {url}: {type(exc).__name__}: {exc}") from exc
    except (AuthUnavailable, AuthConfigError) as exc:
        raise SensorThingsUnavailable(f"{method} {url}: credentials: {exc}") from exc
    if _is_transient(response.status_code):
        raise SensorThingsUnavailable(f"{method} {url}: {_reason(response)}")
    return response


# ---------------------------------------------------------------------------------------
# Delivery


class SensorThingsSender:
    """Sends observations of any number of gateways; shared by the uplink and the receiver's
    forwarder (:mod:`edge.ingest.sta_forward`)."""

    def __init__(
        self,
        settings: SensorThingsHttpSettings,
        registry_path: Path | None,
        locations: Mapping[str, GeoPoint] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self._registry_path = settings.registry_file or registry_path
        self._locations = dict(locations or {})
        self._transport = transport
        self._http: httpx.AsyncClient | None = None
        self._registry: DatastreamRegistry | None = None
        self.use_data_array = settings.create_observations
        self.degrade_intervals = settings.phenomenon_interval == "end_instant"
        self.stats: dict[str, int] = {
            "requests": 0, "confirmed": 0, "rejected": 0, "row_retries": 0,
            "duplicates": 0, "degraded": 0, "conflicts": 0,
        }

    async def open(self) -> None:
        if self._http is None:
            self._http = build_http_client(self.settings, self._transport)
            self._registry = DatastreamRegistry(self._http, self.settings.base_url,
                                                self._registry_path)
            # What earlier runs learnt about this server (only where the settings allow it).
            if self._registry.quirks.get("noDataArray"):
                self.use_data_array = False
            if (self._registry.quirks.get("noIntervals")
                    and self.settings.phenomenon_interval == "auto"):
                self.degrade_intervals = True

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    @property
    def locations(self) -> Mapping[str, GeoPoint]:
        """Known gateway positions (Thing Locations)."""
        return self._locations

    @property
    def registry(self) -> DatastreamRegistry:
        if self._registry is None:
            raise RuntimeError("SensorThings sender is not open (use 'async with')")
        return self._registry

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            raise RuntimeError("SensorThings sender is not open (use 'async with')")
        return self._http

    @property
    def mode(self) -> IntervalMode:
        return "end_instant" if self.degrade_intervals else "interval"

    async def ensure_datastreams(
        self, streams: Iterable[tuple[Datastream, str]]
    ) -> dict[Datastream, EntityId]:
        """Register Datastreams ahead of time (``(stream, sensor_model)`` pairs)."""
        pairs = list(streams)
        out: dict[Datastream, EntityId] = {}
        for stream, model in pairs:
            out[stream] = await self.registry.ensure(
                stream, model, self._locations.get(stream.gateway_id))
        return out

    async def deliver(self, gateway_id: str, observations: Sequence[Observation]) -> Delivery:
        """Send committed observations; see the module docstring for what each outcome means."""
        delivery = Delivery()
        try:
            ready = await self._prepare(gateway_id, observations, delivery)
            size = self.settings.batch_size
            for start in range(0, len(ready), size):
                await self._send_chunk(gateway_id, ready[start : start + size], delivery)
        except SensorThingsUnavailable:
            if delivery.confirmed or delivery.rejected:
                return self._count(delivery)  # the rest stays pending; settled rows are not resent
            raise
        return self._count(delivery)

    def _count(self, delivery: Delivery) -> Delivery:
        self.stats["confirmed"] += len(delivery.confirmed)
        self.stats["rejected"] += len(delivery.rejected)
        return delivery

    async def _prepare(
        self, gateway_id: str, observations: Sequence[Observation], delivery: Delivery
    ) -> list[tuple[Observation, EntityId]]:
        """Drop what can never be sent (rejecting it) and resolve Datastream ids."""
        ready: list[tuple[Observation, EntityId]] = []
        refused: dict[Datastream, str] = {}
        for obs in observations:
            seq = obs.sequence
            if seq is None:
                log.error("observation without sequence skipped: %s", obs.stream.key)
                continue
            if not sta.result_is_valid(obs):
                delivery.rejected[seq] = f"result {obs.result!r} is not a finite number"
                continue
            if obs.stream in refused:
                delivery.rejected[seq] = refused[obs.stream]
                continue
            try:
                ds_id = await self.registry.ensure(
                    obs.stream, obs.provenance.sensor_model,
                    self._locations.get(obs.stream.gateway_id))
            except _Rejected as exc:
                log.error("SensorThings refused registering %s: %s", obs.stream.key, exc)
                refused[obs.stream] = f"Datastream not registered: {exc}"
                delivery.rejected[seq] = refused[obs.stream]
                continue
            ready.append((obs, ds_id))
        return ready

    async def _send_chunk(
        self, gateway_id: str, chunk: list[tuple[Observation, EntityId]], delivery: Delivery
    ) -> None:
        todo = chunk
        while todo:  # at most twice: the interval mode changes only once
            mode = self.mode
            bulk = self.use_data_array
            retry = await self._send_data_array(gateway_id, todo, delivery) if bulk else todo
            todo = []
            for i, (obs, ds_id) in enumerate(retry):
                await self._send_one(gateway_id, obs, ds_id, delivery)
                if bulk and self.mode != mode:
                    todo = retry[i + 1 :]  # intervals now go as end instants: bulk the rest
                    break

    async def _send_data_array(
        self, gateway_id: str, chunk: list[tuple[Observation, EntityId]], delivery: Delivery
    ) -> list[tuple[Observation, EntityId]]:
        """POST CreateObservations; returns the rows to retry one by one."""
        request = sta.create_observations_body(chunk, gateway_id, self.mode)
        ids = {id(obs): ds_id for obs, ds_id in chunk}
        self.stats["requests"] += 1
        response = await _request(self.http, "POST", f"{self.settings.base_url}/CreateObservations",
                                  json=request.body)
        if response.status_code in _NO_DATA_ARRAY:
            log.warning("server has no CreateObservations (%s); sending one by one",
                        _reason(response))
            self.use_data_array = False
            self.registry.remember_quirk("noDataArray")
            return chunk
        if response.status_code >= 400:
            log.warning("CreateObservations refused (%s); isolating rows", _reason(response))
            return chunk
        try:
            results = response.json()
        except ValueError:
            results = None
        if not isinstance(results, list) or len(results) != len(request.rows):
            # We cannot tell which rows were stored: retry later (the obsId lets the
            # receiver de-duplicate whatever was stored twice).
            raise SensorThingsUnavailable(
                f"CreateObservations answered {len(results) if isinstance(results, list) else 0}"
                f" entries for {len(request.rows)} rows: {_reason(response)}")
        retry: list[tuple[Observation, EntityId]] = []
        for obs, result in zip(request.rows, results, strict=True):
            if isinstance(result, str) and result != "error" and "(" in result:
                delivery.confirmed.append(obs.sequence)  # type: ignore[arg-type]
            else:
                retry.append((obs, ids[id(obs)]))
        return retry

    async def _send_one(
        self, gateway_id: str, obs: Observation, ds_id: EntityId, delivery: Delivery
    ) -> None:
        """POST one Observation and settle it in ``delivery``.

        Leaves it pending when its Datastream no longer exists on the server (the id is
        dropped from the cache, so the next attempt registers it again); raises
        :class:`SensorThingsUnavailable` on 5xx / network errors.
        """
        seq = obs.sequence
        assert seq is not None
        self.stats["row_retries"] += 1
        outcome = await self._post_observation(gateway_id, obs, ds_id, self.mode)
        may_degrade = (obs.phenomenon_end_ms is not None and not self.degrade_intervals
                       and self.settings.phenomenon_interval == "auto")
        if outcome is not None and may_degrade:
            # The server may refuse intervals (some answer 4xx, some 5xx): try the end instant.
            degraded = await self._post_observation(gateway_id, obs, ds_id, "end_instant")
            if degraded is None:
                log.warning("server refuses interval phenomenonTime (%s); sending end instants "
                            "from now on", outcome)
                self.degrade_intervals = True
                self.registry.remember_quirk("noIntervals")
                self.stats["degraded"] += 1
                outcome = None
            elif _is_server_failure(outcome):
                outcome = degraded
        if outcome is None:
            delivery.confirmed.append(seq)
            return
        if await self._datastream_gone(obs.stream, ds_id):
            return
        if _is_server_failure(outcome):
            raise SensorThingsUnavailable(f"observation seq {seq}: {outcome}")
        delivery.rejected[seq] = outcome

    async def _holds(self, gateway_id: str, obs: Observation, ds_id: EntityId) -> bool:
        """After a 409: is the stored observation ours (same obsId)?

        Servers answer 409 for another observation with the same phenomenonTime on the
        Datastream (istSOS4), so "409" alone must not confirm. Look ours up by
        ``parameters/obsId`` (FROST, istSOS4), else among the Datastream's observations within a
        second of its phenomenon time (servers that cannot filter on parameters, or that keep
        whole seconds only).
        """
        assert obs.sequence is not None
        ours = str(observation_id(gateway_id, obs.sequence))
        url = f"{self.settings.base_url}/{sta.entity_path('Datastreams', ds_id)}/Observations"
        instant = obs.phenomenon_end_ms if (obs.phenomenon_end_ms is not None
                                            and self.mode == "end_instant") else obs.phenomenon_ms
        window = (f"phenomenonTime ge {sta.iso_ms(instant - 1000)} and "
                  f"phenomenonTime le {sta.iso_ms(instant + 1000)}")
        for query in (f"parameters/obsId eq {sta.odata_string(ours)}", window):
            response = await _request(self.http, "GET", url, params={
                "$filter": query, "$select": "id,parameters", "$top": "100"})
            if response.status_code != 200:
                continue
            try:
                entities = response.json().get("value", [])
            except ValueError:
                continue
            if any(isinstance(e, dict) and isinstance(e.get("parameters"), dict)
                   and e["parameters"].get("obsId") == ours for e in entities):
                return True
        return False

    async def _datastream_gone(self, stream: Datastream, ds_id: EntityId) -> bool:
        """True (and the cached id forgotten) when ``GET Datastreams(id)`` says 404."""
        url = f"{self.settings.base_url}/{sta.entity_path('Datastreams', ds_id)}"
        response = await _request(self.http, "GET", url, params={"$select": "id"})
        if response.status_code != 404:
            return False
        log.warning("Datastream %s of %s is gone from the server; registering it again",
                    ds_id, stream.key)
        self.registry.forget(stream)
        return True

    async def _post_observation(
        self, gateway_id: str, obs: Observation, ds_id: EntityId, mode: IntervalMode
    ) -> str | None:
        """None when stored (or already there), else a reason ("HTTP 422: ...")."""
        body = sta.observation_body(obs, gateway_id, ds_id, mode)
        self.stats["requests"] += 1
        try:
            response = await self.http.post(f"{self.settings.base_url}/Observations", json=body)
        except httpx.TransportError as exc:
            return f"transport error: {type(exc).__name__}: {exc}"
        except (AuthUnavailable, AuthConfigError) as exc:
            raise SensorThingsUnavailable(f"POST Observations: credentials: {exc}") from exc
        if response.status_code in _TRANSIENT_4XX:
            raise SensorThingsUnavailable(f"POST Observations: {_reason(response)}")
        if response.status_code == 409:
            if await self._holds(gateway_id, obs, ds_id):
                self.stats["duplicates"] += 1
                return None
            self.stats["conflicts"] += 1
            return (f"{_reason(response)} — the server holds a different observation at this "
                    f"phenomenonTime on this Datastream (its duplicate rule); this one was not "
                    f"stored")
        if response.status_code < 300:
            return None
        return _reason(response)
