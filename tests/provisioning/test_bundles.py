"""Signed bundles: only what the trust anchor signed, for this gateway, newer, valid, applies."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provisioning.bundles import (
    BundleError,
    BundleStore,
    config_validator,
    generate_signing_key,
    load_signing_key,
    load_trust_anchors,
    sign_bundle,
    verify_bundle,
)

CONFIG = """
[gateway]
id = "gw-1"
data_dir = "/tmp/duet"

[[sources]]
name = "pm"
type = "sds011"
port = "/dev/ttyUSB0"
"""


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    priv, pub = tmp_path / "keys" / "bundle-signing.key", tmp_path / "keys" / "trust.pem"
    generate_signing_key(priv, pub)
    return priv, pub


def _store(tmp_path: Path, trust: Path) -> BundleStore:
    return BundleStore(tmp_path / "state", "gw-1", load_trust_anchors(trust))


def _bundle(priv: Path, version: int, text: str = CONFIG, gateway_id: str = "*") -> bytes:
    return sign_bundle("config", version, {"gateway.toml": text.encode()}, load_signing_key(priv),
                       gateway_id=gateway_id)


def test_signing_key_is_private(keys: tuple[Path, Path]) -> None:
    priv, pub = keys
    assert stat.S_IMODE(os.stat(priv).st_mode) == 0o600
    assert b"PRIVATE" not in pub.read_bytes()


def test_apply_and_upgrade(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    priv, trust = keys
    store = _store(tmp_path, trust)
    first = store.apply(_bundle(priv, 1), "config", config_validator())
    assert first.previous is None and store.current_version("config") == 1
    current = store.current_path("config")
    assert current is not None and (current / "gateway.toml").read_text() == CONFIG
    second = store.apply(_bundle(priv, 2, CONFIG.replace('id = "gw-1"', 'id = "gw-1"\nname = "x"')),
                         "config", config_validator())
    assert second.previous == 1
    assert (tmp_path / "state/config/current/gateway.toml").read_text().count('name = "x"') == 1
    assert store.versions("config") == [1, 2]
    assert store.rollback("config") == 1
    assert store.current_version("config") == 1


def _assert_refused(store: BundleStore, data: bytes, match: str) -> None:
    before = store.current_version("config")
    with pytest.raises(BundleError, match=match):
        store.apply(data, "config", config_validator())
    assert store.current_version("config") == before
    assert not list((store.root / "config").glob(".staging*"))


def test_tampered_content_is_refused(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    priv, trust = keys
    store = _store(tmp_path, trust)
    store.apply(_bundle(priv, 1), "config")
    doc = json.loads(_bundle(priv, 2))
    evil = CONFIG.replace("/dev/ttyUSB0", "/dev/evil").encode()
    doc["files"]["gateway.toml"] = base64.b64encode(evil).decode()
    _assert_refused(store, json.dumps(doc).encode(), "does not match its signed SHA-256")
    doc = json.loads(_bundle(priv, 2))
    doc["manifest"]["version"] = 99
    _assert_refused(store, json.dumps(doc).encode(), "signature does not verify")
    doc = json.loads(_bundle(priv, 2))
    doc["files"]["extra.toml"] = base64.b64encode(b"x").decode()
    _assert_refused(store, json.dumps(doc).encode(), "differ from the signed manifest")


def test_untrusted_key_is_refused(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    _, trust = keys
    other_priv, _ = tmp_path / "other.key", tmp_path / "other.pem"
    generate_signing_key(other_priv, tmp_path / "other.pem")
    _assert_refused(_store(tmp_path, trust), _bundle(other_priv, 1), "not in the trust anchor")


def test_rollback_and_wrong_gateway_are_refused(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    priv, trust = keys
    store = _store(tmp_path, trust)
    store.apply(_bundle(priv, 5), "config")
    _assert_refused(store, _bundle(priv, 4), "not newer")
    _assert_refused(store, _bundle(priv, 5), "not newer")
    _assert_refused(store, _bundle(priv, 6, gateway_id="gw-2"), "addressed to 'gw-2'")
    with pytest.raises(BundleError, match="expected a calibration bundle"):
        store.apply(_bundle(priv, 6), "calibration")


def test_invalid_config_keeps_previous_version(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    priv, trust = keys
    store = _store(tmp_path, trust)
    store.apply(_bundle(priv, 1), "config", config_validator())
    broken = CONFIG.replace('type = "sds011"', 'type = "nonsense"')
    _assert_refused(store, _bundle(priv, 2, broken), "unknown sensor type")
    assert (tmp_path / "state/config/current/gateway.toml").read_text() == CONFIG
    assert store.versions("config") == [1]


def test_path_traversal_names_are_refused(keys: tuple[Path, Path]) -> None:
    priv, trust = keys
    with pytest.raises(BundleError, match="not allowed"):
        sign_bundle("config", 1, {"../etc/passwd": b"x"}, load_signing_key(priv))
    doc = json.loads(_bundle(priv, 1))
    doc["files"] = {"../x": doc["files"]["gateway.toml"]}
    with pytest.raises(BundleError):
        verify_bundle(json.dumps(doc).encode(), load_trust_anchors(trust))


def test_old_versions_are_pruned(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    priv, trust = keys
    store = _store(tmp_path, trust)
    for version in range(1, 7):
        store.apply(_bundle(priv, version), "config")
    assert store.versions("config") == [4, 5, 6]


def test_two_trust_anchors_allow_key_rotation(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    priv, trust = keys
    new_priv, new_pub = tmp_path / "new.key", tmp_path / "new.pem"
    generate_signing_key(new_priv, new_pub)
    both = tmp_path / "trust-both.pem"
    both.write_bytes(trust.read_bytes() + new_pub.read_bytes())
    store = _store(tmp_path, both)
    store.apply(_bundle(priv, 1), "config")
    store.apply(_bundle(new_priv, 2), "config")
    assert store.current_version("config") == 2


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_bundles_never_verify_and_only_raise_bundle_error(
    keys: tuple[Path, Path], data: st.DataObject
) -> None:
    """Any byte-level change to a signed bundle is refused with BundleError, never a crash."""
    priv, trust = keys
    anchors = load_trust_anchors(trust)
    original = _bundle(priv, 3)
    raw = bytearray(original)
    kind = data.draw(st.sampled_from(["flip", "truncate", "insert", "json"]))
    if kind == "flip":
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] ^= data.draw(st.integers(1, 255))
    elif kind == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    elif kind == "insert":
        pos = data.draw(st.integers(0, len(raw)))
        raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
    else:
        doc = json.loads(original)
        path = data.draw(st.sampled_from([("manifest", "version"), ("manifest", "gateway_id"),
                                          ("manifest", "kind"), ("signature", "key_id"),
                                          ("signature", "value"), ("format",)]))
        value = data.draw(st.one_of(st.integers(), st.text(max_size=20), st.none()))
        target = doc
        for key in path[:-1]:
            target = target[key]
        if target.get(path[-1]) == value:
            return
        target[path[-1]] = value
        raw = bytearray(json.dumps(doc).encode())
    if bytes(raw) == original:
        return
    try:
        verified = verify_bundle(bytes(raw), anchors)
    except BundleError:
        return
    # Only whitespace-level changes outside the signed content may still verify.
    assert verified == verify_bundle(original, anchors)
