"""Fixtures for the provisioning tests; the TLS broker lives in tests/plugins for reuse."""

from tests.plugins.tls_broker import tls_broker  # noqa: F401  (re-exported fixture)
