"""Settings for django_sapool's own tests: real servers, chosen by environment.

SAPOOL_TEST_DRIVER picks the backend under test: psycopg (default), psycopg2 or
mysqlclient. Connection settings come from SAPOOL_PG_* / SAPOOL_MYSQL_* and
default to the local servers.
"""

from __future__ import annotations

import os
import sys

DRIVER = os.environ.get("SAPOOL_TEST_DRIVER", "psycopg")
if DRIVER not in {"psycopg", "psycopg2", "mysqlclient"}:
    raise RuntimeError(
        f"SAPOOL_TEST_DRIVER must be psycopg, psycopg2 or mysqlclient, not {DRIVER!r}"
    )
if DRIVER == "psycopg2":
    # Django's PostgreSQL backend prefers psycopg 3 when it can import it.
    sys.modules["psycopg"] = None  # type: ignore[assignment]

VENDOR = "mysql" if DRIVER == "mysqlclient" else "postgresql"


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


if VENDOR == "postgresql":
    DATABASE = {
        "ENGINE": "django_sapool.backends.postgresql",
        "NAME": _env("SAPOOL_PG_NAME", "test"),
        "USER": _env("SAPOOL_PG_USER", "postgres"),
        "PASSWORD": _env("SAPOOL_PG_PASSWORD", ""),
        "HOST": _env("SAPOOL_PG_HOST", "127.0.0.1"),
        "PORT": _env("SAPOOL_PG_PORT", "5432"),
    }
else:
    DATABASE = {
        "ENGINE": "django_sapool.backends.mysql",
        "NAME": _env("SAPOOL_MYSQL_NAME", "test"),
        "USER": _env("SAPOOL_MYSQL_USER", "root"),
        "PASSWORD": _env("SAPOOL_MYSQL_PASSWORD", ""),
        "HOST": _env("SAPOOL_MYSQL_HOST", "127.0.0.1"),
        "PORT": _env("SAPOOL_MYSQL_PORT", "3306"),
    }

DATABASES = {"default": {**DATABASE, "OPTIONS": {"sapool": {"pool_size": 4}}}}
if "SAPOOL_TEST_DB_NAME" in os.environ:  # a test-runner run beside pytest's own
    DATABASES["default"]["TEST"] = {"NAME": os.environ["SAPOOL_TEST_DB_NAME"]}
INSTALLED_APPS = ["django_sapool", "tests.testapp"]
ROOT_URLCONF = "tests.urls"
SECRET_KEY = "django-sapool-tests"
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
ALLOWED_HOSTS = ["testserver"]
