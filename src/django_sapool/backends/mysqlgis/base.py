"""Pooled MySQL GIS backend: Django's GeoDjango MySQL backend on the pool."""

from __future__ import annotations

from django.contrib.gis.db.backends.mysql import base

from django_sapool.backends.mysql.base import DatabaseWrapper as Pooled
from django_sapool.backends.mysql.base import NoteFailuresMixin
from django_sapool.wrapper import PooledDatabaseWrapperMixin


class DatabaseWrapper(
    NoteFailuresMixin, PooledDatabaseWrapperMixin, base.DatabaseWrapper
):
    sapool_dialect_url = Pooled.sapool_dialect_url
    sapool_driver_class = Pooled.sapool_driver_class
    sapool_timeout_error = Pooled.sapool_timeout_error
    sapool_unavailable_error = Pooled.sapool_unavailable_error
    creation_class = Pooled.creation_class
