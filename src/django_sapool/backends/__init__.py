"""The pooled backends, one package per Django backend they extend."""

from __future__ import annotations

import importlib

from django.core.exceptions import ImproperlyConfigured

#: The extra that installs each vendor's driver.
_INSTALL = {
    "postgresql": 'pip install "django-sapool[psycopg]" (or "django-sapool[psycopg2]")',
    "mysql": 'pip install "django-sapool[mysqlclient]"',
}


def import_django_backend(vendor: str) -> None:
    """Import Django's backend for ``vendor``; without its driver, say what to install.

    Django's own message ("Error loading psycopg2 or psycopg module") is kept,
    followed by the django-sapool extra that installs a supported driver.
    """
    try:
        importlib.import_module(f"django.db.backends.{vendor}.base")
    except ImproperlyConfigured as exc:
        raise ImproperlyConfigured(
            f"{exc}\nTo install a driver django_sapool supports: {_INSTALL[vendor]}"
        ) from exc
