"""Django's PostgreSQL backend with a list for a pool (see benchmarks.floor)."""

from __future__ import annotations

from django.db.backends.postgresql import base

from benchmarks.floor import ListPoolMixin


class DatabaseWrapper(ListPoolMixin, base.DatabaseWrapper):
    pass
