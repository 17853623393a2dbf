"""Fixtures for the SensorThings tests: the real server comes from tests.plugins."""

from tests.plugins.sta_server import sta_server  # noqa: F401
