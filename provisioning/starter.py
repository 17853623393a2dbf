"""The complete starting config that ``provision init`` writes for a new gateway.

It is rendered as TOML text (comments kept for the technician) and validated with the
gateway's own schema (:mod:`edge.config`) before it is written, so ``init`` never leaves
a config the gateway would refuse.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from provisioning.identity import IdentityPaths


@dataclass(frozen=True, slots=True)
class SourceSpec:
    name: str
    type: str
    port: str | None = None

    @classmethod
    def parse(cls, text: str) -> SourceSpec:
        """``NAME=TYPE[:PORT]``, e.g. ``pm=sds011:/dev/ttyUSB0`` or ``air=ruuvi``."""
        name, sep, rest = text.partition("=")
        if not sep or not name or not rest:
            raise ValueError(
                f"source {text!r}: expected NAME=TYPE[:PORT], e.g. pm=sds011:/dev/ttyUSB0"
            )
        type_, _, port = rest.partition(":")
        return cls(name.strip(), type_.strip(), port.strip() or None)


@dataclass(frozen=True, slots=True)
class StarterSpec:
    gateway_id: str
    identity: IdentityPaths
    sources: tuple[SourceSpec, ...]
    broker_host: str
    broker_port: int = 8883
    name: str = ""
    data_dir: Path = Path("/var/lib/duet-edge")
    latitude: float | None = None
    longitude: float | None = None
    twin_url: str | None = None
    contact: dict[str, str] = field(default_factory=dict)  # [web] contact_name/email/phone/url
    web_port: int = 8080
    extra_sections: dict[str, dict[str, str]] = field(default_factory=dict)


def _q(value: object) -> str:
    """A TOML value: JSON's string escapes are valid TOML basic-string escapes."""
    if isinstance(value, Path):
        value = str(value)
    return json.dumps(value, ensure_ascii=True)


def render(spec: StarterSpec) -> str:
    lines = [
        "# duet-edge gateway configuration written by `duet-edge provision init`.",
        "# Validate after editing with: duet-edge config check FILE",
        "",
        "[gateway]",
        f"id = {_q(spec.gateway_id)}",
    ]
    if spec.name:
        lines.append(f"name = {_q(spec.name)}")
    lines.append(f"data_dir = {_q(spec.data_dir)}")
    if spec.latitude is not None and spec.longitude is not None:
        lines += [f"latitude = {spec.latitude!r}", f"longitude = {spec.longitude!r}"]
    for source in spec.sources:
        lines += ["", "[[sources]]", f"name = {_q(source.name)}", f"type = {_q(source.type)}"]
        if source.port:
            lines.append(f"port = {_q(source.port)}")
    lines += [
        "",
        "[uplinks.mqtt]",
        f"host = {_q(spec.broker_host)}",
        f"port = {spec.broker_port}",
        'mode = "compact"  # CBOR batches to duet/v1/<gateway id>/obs',
        "",
        "# TLS with this gateway's own certificate; the broker takes its identity from the CN.",
        "[uplinks.mqtt.tls]",
        f"ca_file = {_q(spec.identity.ca)}",
        f"cert_file = {_q(spec.identity.cert)}",
        f"key_file = {_q(spec.identity.key)}",
    ]
    if spec.twin_url:
        lines += [
            "",
            "[uplinks.sensorthings_http]",
            f"base_url = {_q(spec.twin_url)}",
            "",
            "[uplinks.sensorthings_http.tls]",
            f"ca_file = {_q(spec.identity.ca)}",
            f"cert_file = {_q(spec.identity.cert)}",
            f"key_file = {_q(spec.identity.key)}",
        ]
    lines += _web_section(spec)
    for section, values in spec.extra_sections.items():
        lines += ["", f"[{section}]"] + [f"{k} = {_q(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


CONTACT_KEYS = ("name", "email", "phone", "url")


def _web_section(spec: StarterSpec) -> list[str]:
    """The host's status page on the home network: read-only (actions need a token_file)."""
    lines = [
        "",
        "# The status page for the host: http://<this gateway's address>:PORT/ on the home",
        "# network. Read-only: restarting a sensor or uploading now needs a token_file.",
        "[web]",
        'host = "0.0.0.0"',
        f"port = {spec.web_port}",
        "# Whom the host contacts when a sensor stops (shown on the page):",
    ]
    for key in CONTACT_KEYS:
        value = spec.contact.get(key, "")
        lines.append(f"contact_{key} = {_q(value)}" if value else f'# contact_{key} = ""')
    return lines


def validate(text: str, source: str) -> None:
    """Raise ``edge.config.ConfigError`` if the gateway would refuse ``text``."""
    from edge.config import parse_config

    parse_config(text, source=source)
