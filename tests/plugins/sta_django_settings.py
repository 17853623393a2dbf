"""Minimal Django settings for running django-ogc-sensorthings as a standalone test server.

Used only by :mod:`tests.plugins.sta_server`. The database path and the public service URL
come from environment variables set by the fixture (``DUET_STA_DB``, ``DUET_STA_URL``).
"""

from __future__ import annotations

import os
from uuid import UUID

SECRET_KEY = "duet-edge-test-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", *os.environ.get("DUET_STA_HOSTS", "").split()]
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "tests.plugins.sta_django_urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "sensorthings.versions.v1_1",
    "sensorthings.versions.v1_1.backends.django",
    "sensorthings.versions.v1_1.extensions.dataarray",
]

MIDDLEWARE: list[str] = []

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DUET_STA_DB", ":memory:"),
        "OPTIONS": {"timeout": 20},
    }
}

SENSORTHINGS_V1_1_SERVICE_URL = os.environ.get("DUET_STA_URL", "http://127.0.0.1:8000/sensorthings")
SENSORTHINGS_V1_1_BACKEND_ADAPTER = (
    "sensorthings.versions.v1_1.backends.django.adapter.DjangoBackendAdapter"
)
SENSORTHINGS_V1_1_ID_TYPE = UUID
SENSORTHINGS_V1_1_ID_DELIMITER = "'"
SENSORTHINGS_V1_1_DOCS_ENABLED = False

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
