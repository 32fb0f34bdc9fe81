"""Settings for Django's own test suite, on our ENGINE or on Django's.

SAPOOL_SUITE_ENGINE: "sapool" or "stock"; SAPOOL_TEST_DRIVER: psycopg,
psycopg2 or mysqlclient; the server comes from the same SAPOOL_PG_* and
SAPOOL_MYSQL_* variables as django_sapool's own tests.
"""

from __future__ import annotations

import os
import sys

DRIVER = os.environ.get("SAPOOL_TEST_DRIVER", "psycopg")
ENGINE = os.environ.get("SAPOOL_SUITE_ENGINE", "sapool")
if DRIVER == "psycopg2":
    sys.modules["psycopg"] = None  # type: ignore[assignment]
VENDOR = "mysql" if DRIVER == "mysqlclient" else "postgresql"
PREFIX = "SAPOOL_PG_" if VENDOR == "postgresql" else "SAPOOL_MYSQL_"
DEFAULTS = {
    "postgresql": {"USER": "postgres", "PORT": "5432"},
    "mysql": {"USER": "root", "PORT": "3306"},
}[VENDOR]


# SAPOOL_SUITE_GIS: GeoDjango's backends instead (runtests.py then adds gis_tests).
GIS = os.environ.get("SAPOOL_SUITE_GIS") == "1"
ENGINES = {
    ("sapool", False): f"django_sapool.backends.{VENDOR}",
    ("stock", False): f"django.db.backends.{VENDOR}",
    ("sapool", True): "django_sapool.backends."
    + ("postgis" if VENDOR == "postgresql" else "mysqlgis"),
    ("stock", True): "django.contrib.gis.db.backends."
    + ("postgis" if VENDOR == "postgresql" else "mysql"),
}


def database(name: str) -> dict[str, object]:
    return {
        "ENGINE": ENGINES[ENGINE, GIS],
        "NAME": name,
        "USER": os.environ.get(PREFIX + "USER", DEFAULTS["USER"]),
        "PASSWORD": os.environ.get(PREFIX + "PASSWORD", ""),
        "HOST": os.environ.get(PREFIX + "HOST", "127.0.0.1"),
        "PORT": os.environ.get(PREFIX + "PORT", DEFAULTS["PORT"]),
    }


DATABASES = {
    "default": database("django_suite"),
    "other": database("django_suite_other"),
}
SECRET_KEY = "django_tests_secret_key"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
USE_TZ = False
TEST_RUNNER = "django_suite.recording.RecordingRunner"
