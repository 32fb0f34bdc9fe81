"""Settings for the example shop: the database comes from the environment.

DEMO_ENGINE picks the backend: "sapool" (django_sapool's pooled ENGINE) or
"stock" (Django's own, which connects and disconnects on every request).
DEMO_DB_VENDOR is "postgresql" or "mysql"; DEMO_DB_NAME, DEMO_DB_USER,
DEMO_DB_PASSWORD, DEMO_DB_HOST (a host or a socket directory) and
DEMO_DB_PORT say where.
"""

from __future__ import annotations

import os

VENDOR = os.environ.get("DEMO_DB_VENDOR", "postgresql")
ENGINE = os.environ.get("DEMO_ENGINE", "sapool")
if VENDOR not in {"postgresql", "mysql"} or ENGINE not in {"sapool", "stock"}:
    raise RuntimeError("DEMO_DB_VENDOR: postgresql|mysql; DEMO_ENGINE: sapool|stock")

DATABASES = {
    "default": {
        "ENGINE": (
            f"django_sapool.backends.{VENDOR}"
            if ENGINE == "sapool"
            else f"django.db.backends.{VENDOR}"
        ),
        "NAME": os.environ.get("DEMO_DB_NAME", "demo"),
        "USER": os.environ.get("DEMO_DB_USER", ""),
        "PASSWORD": os.environ.get("DEMO_DB_PASSWORD", ""),
        "HOST": os.environ.get("DEMO_DB_HOST", ""),
        "PORT": os.environ.get("DEMO_DB_PORT", ""),
        "CONN_MAX_AGE": 0,  # per request: a checkout with sapool, a connect without
        "OPTIONS": (
            {"sapool": {"pool_size": 4, "max_overflow": 4, "timeout": 10}}
            if ENGINE == "sapool"
            else {}
        ),
    }
}

INSTALLED_APPS = ["django_sapool", "catalog"]
ROOT_URLCONF = "shop.urls"
SECRET_KEY = "django-sapool-demo-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
MIDDLEWARE: list[str] = []
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    # Pool created/disposed and fork notices; WARNING would keep it quiet.
    "loggers": {"django_sapool": {"handlers": ["console"], "level": "INFO"}},
}
