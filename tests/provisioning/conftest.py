"""Fixtures for the provisioning tests (defined in tests/plugins for reuse by other areas).

Imported here once so session-scoped fixtures (the SensorThings server) start once.
"""

from tests.plugins.sta_server import sta_server  # noqa: F401  (re-exported fixture)
from tests.plugins.tls_broker import tls_broker  # noqa: F401  (re-exported fixture)
