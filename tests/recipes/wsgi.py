"""WSGI entry point (gunicorn, uWSGI); the app touches the database at import."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.recipes.settings")
application = get_wsgi_application()

import tests.recipes.startup  # noqa: E402, F401  (after Django is set up)
