"""Pooled MySQL/MariaDB backend: Django's own backend on mysqlclient."""

from __future__ import annotations

from typing import Any

from django.db.backends.mysql import base

from django_sapool import errors
from django_sapool._drivers import MySQLDriver, mysql_statement_failed
from django_sapool.wrapper import PooledDatabaseWrapperMixin

from .creation import DatabaseCreation

#: The driver's OperationalError (Django's backend imported the driver).
_DriverError: Any = base.DatabaseWrapper.Database.OperationalError


class PoolTimeout(errors.PoolTimeout, _DriverError):  # type: ignore[misc]
    """django_sapool.PoolTimeout as mysqlclient's OperationalError."""


class ServerUnavailable(errors.ServerUnavailable, _DriverError):  # type: ignore[misc]
    """django_sapool.ServerUnavailable as mysqlclient's OperationalError."""


class NoteFailuresMixin:
    """Notes each failed statement: the status flags may now hide an open
    transaction (see _drivers.MySQLDriver.in_transaction)."""

    connection: Any

    def sapool_statement_failed(self, error: BaseException) -> None:
        mysql_statement_failed(self.connection)
        super().sapool_statement_failed(error)  # type: ignore[misc]


class DatabaseWrapper(
    NoteFailuresMixin, PooledDatabaseWrapperMixin, base.DatabaseWrapper
):
    sapool_dialect_url = "mysql+mysqldb://"
    sapool_driver_class = MySQLDriver
    sapool_timeout_error = PoolTimeout
    sapool_unavailable_error = ServerUnavailable
    creation_class = DatabaseCreation
