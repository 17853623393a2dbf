"""Fixtures shared by every test folder."""

from tests.plugins.mosquitto import mosquitto  # noqa: F401
