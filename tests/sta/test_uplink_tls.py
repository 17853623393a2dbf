"""TLS settings against a real handshake: CA file, client certificate (mutual TLS)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from edge import sensorthings as sta
from edge.model import Batch
from edge.sensorthings.client import SensorThingsUnavailable
from edge.sensorthings.settings import SensorThingsHttpSettings
from edge.uplinks.sensorthings_http import SensorThingsHttpUplink
from tests.sta.helpers import make_obs
from tests.sta.tls_proxy import make_pki, tls_proxy

HERE = sta.GeoPoint(3.72, 51.05)


async def test_mutual_tls_upload(sta_server: str, tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    gw = "gw-tls-" + uuid.uuid4().hex[:6]
    async with tls_proxy(sta_server, pki) as https_url:
        tls = {"ca_file": pki.ca_file, "cert_file": pki.client_cert, "key_file": pki.client_key}
        settings = SensorThingsHttpSettings(base_url=https_url, tls=tls)
        async with SensorThingsHttpUplink(settings, gw, tmp_path, HERE) as up:
            delivery = await up.send(Batch(gw, (make_obs(gw, 1), make_obs(gw, 2))))
    assert sorted(delivery.confirmed) == [1, 2]


@pytest.mark.parametrize("case", ["untrusted_server", "no_client_cert"])
async def test_tls_failures_are_transient_errors(sta_server: str, tmp_path: Path,
                                                 case: str) -> None:
    pki = make_pki(tmp_path / "pki")
    other = make_pki(tmp_path / "other")
    gw = "gw-tls-" + uuid.uuid4().hex[:6]
    async with tls_proxy(sta_server, pki) as https_url:
        if case == "untrusted_server":
            tls = {"ca_file": other.ca_file, "cert_file": pki.client_cert,
                   "key_file": pki.client_key}
        else:
            tls = {"ca_file": pki.ca_file}
        settings = SensorThingsHttpSettings(base_url=https_url, tls=tls, timeout_s=5)
        async with SensorThingsHttpUplink(settings, gw, tmp_path, HERE) as up:
            with pytest.raises(SensorThingsUnavailable):
                await up.send(Batch(gw, (make_obs(gw, 1),)))
