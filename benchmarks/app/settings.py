"""Settings of the benchmark app: the database comes from SAPOOL_BENCH_DATABASE.

SAPOOL_BENCH_DATABASE is the JSON of one DATABASES entry. SAPOOL_BENCH_DRIVER
set to psycopg2 makes psycopg 3 unimportable, so Django (and any pool package)
picks psycopg2.
"""

from __future__ import annotations

import json
import os
import sys

if os.environ.get("SAPOOL_BENCH_DRIVER") == "psycopg2":
    sys.modules["psycopg"] = None  # type: ignore[assignment]

DATABASES = {"default": json.loads(os.environ["SAPOOL_BENCH_DATABASE"])}
INSTALLED_APPS = ["benchmarks.app"]
ROOT_URLCONF = "benchmarks.app.urls"
SECRET_KEY = "django-sapool-benchmark"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True
TIME_ZONE = "UTC"
MIDDLEWARE: list[str] = []
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
