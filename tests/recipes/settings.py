"""Settings of the recipes' project: the test suite's database, as a user of its own.

The database comes from tests/settings.py (SAPOOL_TEST_DRIVER and the
SAPOOL_PG_* / SAPOOL_MYSQL_* variables). tests/test_recipes.py points the
servers it starts at the test database and at a login of their own with
SAPOOL_RECIPES_NAME / _USER / _PASSWORD, so that it can tell their server
sessions from everyone else's.
"""

from __future__ import annotations

import os

from tests.settings import DATABASE, DRIVER, VENDOR

__all__ = ["DRIVER", "VENDOR"]

#: Pool sizes of every recipe process: the server sees at most
#: processes x (POOL_SIZE + MAX_OVERFLOW) sessions of theirs.
POOL_SIZE = 2
MAX_OVERFLOW = 1

DATABASES = {
    "default": {
        **DATABASE,
        "NAME": os.environ.get("SAPOOL_RECIPES_NAME", DATABASE["NAME"]),
        "USER": os.environ.get("SAPOOL_RECIPES_USER", DATABASE["USER"]),
        "PASSWORD": os.environ.get("SAPOOL_RECIPES_PASSWORD", DATABASE["PASSWORD"]),
        "CONN_MAX_AGE": 0,
        "OPTIONS": {
            "sapool": {
                "pool_size": POOL_SIZE,
                "max_overflow": MAX_OVERFLOW,
                "timeout": 10,
            }
        },
    }
}
INSTALLED_APPS = ["tests.recipes"]
ROOT_URLCONF = "tests.recipes.urls"
SECRET_KEY = "django-sapool-recipes"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Celery (tests/recipes/celery_app.py reads the CELERY_* names).
CELERY_BROKER_URL = os.environ.get("SAPOOL_REDIS_URL", "redis://127.0.0.1:6379/13")
CELERY_RESULT_BACKEND = CELERY_BROKER_URL
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("SAPOOL_RECIPES_QUEUE", "sapool-recipes")
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
