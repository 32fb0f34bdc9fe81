"""Pooled MySQL/MariaDB backend: Django's own backend on mysqlclient."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from django.db.backends.mysql import base
from django.db.utils import DatabaseErrorWrapper
from django.utils.functional import cached_property

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


class _NotingErrorWrapper(DatabaseErrorWrapper):
    """Django's error translation, which also tells the pool a statement failed."""

    wrapper: Any  # set by Django's __init__; not in django-stubs

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            return
        mysql_statement_failed(self.wrapper.connection)
        super().__exit__(exc_type, exc_value, traceback)


class NoteFailuresMixin:
    """Every query, commit and rollback Django runs passes through this wrapper."""

    @cached_property
    def wrap_database_errors(self) -> DatabaseErrorWrapper:
        return _NotingErrorWrapper(self)


class DatabaseWrapper(
    NoteFailuresMixin, PooledDatabaseWrapperMixin, base.DatabaseWrapper
):
    sapool_dialect_url = "mysql+mysqldb://"
    sapool_driver_class = MySQLDriver
    sapool_timeout_error = PoolTimeout
    sapool_unavailable_error = ServerUnavailable
    creation_class = DatabaseCreation
