"""Pooled MySQL/MariaDB backend: Django's own backend on mysqlclient."""

from __future__ import annotations

from django.db.backends.mysql import base

from django_sapool.reset import MySQLSession
from django_sapool.wrapper import PooledDatabaseWrapperMixin

from .creation import DatabaseCreation


class DatabaseWrapper(PooledDatabaseWrapperMixin, base.DatabaseWrapper):
    sapool_dialect_url = "mysql+mysqldb://"
    sapool_session_class = MySQLSession
    creation_class = DatabaseCreation
