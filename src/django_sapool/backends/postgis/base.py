"""Pooled PostGIS backend: Django's GeoDjango PostGIS backend on the pool.

Django's PostGIS wrapper registers the geometry types on each new psycopg 3
connection; here that runs once per physical connection, in the pool's creator.
"""

from __future__ import annotations

from django.contrib.gis.db.backends.postgis import base

from django_sapool.backends.postgresql.base import DatabaseWrapper as Pooled
from django_sapool.wrapper import PooledDatabaseWrapperMixin


class DatabaseWrapper(PooledDatabaseWrapperMixin, base.DatabaseWrapper):
    sapool_dialect_url = Pooled.sapool_dialect_url
    sapool_driver_class = Pooled.sapool_driver_class
    sapool_timeout_error = Pooled.sapool_timeout_error
    sapool_unavailable_error = Pooled.sapool_unavailable_error
    sapool_carried_attrs = Pooled.sapool_carried_attrs
    creation_class = Pooled.creation_class
