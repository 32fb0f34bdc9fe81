"""Pooled PostgreSQL backend: Django's own backend, psycopg 3 or psycopg2.

Django picks the driver (psycopg 3 when installed); the pool uses the matching
SQLAlchemy dialect for its ping and disconnect detection.
"""

from __future__ import annotations

from typing import Any

from django.db.backends.postgresql import base
from django.db.backends.postgresql.psycopg_any import is_psycopg3

from django_sapool import errors
from django_sapool._drivers import Psycopg2Driver, Psycopg3Driver
from django_sapool.wrapper import PooledDatabaseWrapperMixin

from .creation import DatabaseCreation

#: The driver's OperationalError (Django's backend imported the driver).
_DriverError: Any = base.DatabaseWrapper.Database.OperationalError


class PoolTimeout(errors.PoolTimeout, _DriverError):  # type: ignore[misc]
    """django_sapool.PoolTimeout as the driver's OperationalError."""


class ServerUnavailable(errors.ServerUnavailable, _DriverError):  # type: ignore[misc]
    """django_sapool.ServerUnavailable as the driver's OperationalError."""


class DatabaseWrapper(PooledDatabaseWrapperMixin, base.DatabaseWrapper):
    sapool_dialect_url = (
        "postgresql+psycopg://" if is_psycopg3 else "postgresql+psycopg2://"
    )
    sapool_driver_class = Psycopg3Driver if is_psycopg3 else Psycopg2Driver
    sapool_carried_attrs = ("isolation_level",)
    sapool_timeout_error = PoolTimeout
    sapool_unavailable_error = ServerUnavailable
    creation_class = DatabaseCreation
