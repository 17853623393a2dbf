"""Provisioning costs on this machine: key/CSR generation, signing, bundles, TLS sessions.

    .venv/bin/python bench/bench_provisioning.py

Each figure is a median over repetitions; ratios compare against a baseline measured in the
same run (Ed25519 key generation; SHA-256 of the same bytes; a plain TCP connect to the same
broker port).
"""

from __future__ import annotations

import hashlib
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from provisioning.bundles import (
    key_id,
    sign_bundle,
    verify_bundle,
)
from provisioning.ca import CertificateAuthority
from provisioning.doctor import TlsFiles, check_mqtt_broker
from provisioning.identity import build_csr, generate_key
from tests.plugins.tls_broker import start_tls_broker


def median_ms(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ed = median_ms(Ed25519PrivateKey.generate, 200)
        p256 = median_ms(lambda: build_csr(generate_key(), "gw-bench"), 200)
        print(f"P-256 key + CSR          {p256:8.3f} ms   ({p256 / ed:5.1f}× an Ed25519 key generation, {ed:.3f} ms)")
        ca = CertificateAuthority.create(work / "ca")
        csr = build_csr(generate_key(), "gw-bench")
        sign = median_ms(lambda: ca.sign_csr(csr), 50)
        print(f"CA sign CSR (+index)     {sign:8.3f} ms")

        key = Ed25519PrivateKey.generate()
        anchors = {key_id(key.public_key()): key.public_key()}
        for label, size in (("4 KiB config", 4096), ("1 MiB calibration", 1 << 20)):
            payload = bytes(range(256)) * (size // 256)
            bundle = sign_bundle("config", 1, {"gateway.toml": payload}, key)
            s = median_ms(lambda p=payload: sign_bundle("config", 1, {"gateway.toml": p}, key), 20)
            v = median_ms(lambda b=bundle: verify_bundle(b, anchors), 20)
            h = median_ms(lambda p=payload: hashlib.sha256(p).digest(), 20)
            print(f"bundle {label:<17} sign {s:7.3f} ms  verify {v:7.3f} ms  ({v / h:6.1f}× SHA-256 of the payload, {h:.3f} ms)")

        with start_tls_broker(work / "broker") as broker:
            gw = broker.client("gw-bench")
            files = TlsFiles(gw.ca_file, gw.cert_file, gw.key_file)
            tcp = median_ms(lambda: socket.create_connection((broker.host, broker.port), 2).close(), 50)
            mqtt = median_ms(lambda: check_mqtt_broker(broker.host, broker.port, files), 30)
            print(f"TLS + client cert + CONNACK {mqtt:6.3f} ms   ({mqtt / tcp:5.1f}× a plain TCP connect, {tcp:.3f} ms)")


if __name__ == "__main__":
    main()
