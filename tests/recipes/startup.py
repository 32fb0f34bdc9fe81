"""Touches the database at import, as apps that read configuration at startup do.

Under ``gunicorn --preload``, uWSGI without ``lazy-apps`` and Celery this runs
in the master, before the workers are forked: they inherit a connection that
is checked out by Django (the query's connection is deliberately left open)
and must neither use it nor close it; the master's session must survive them.
"""

from __future__ import annotations

import os

from django.db import connection

from tests.support.server import backend_id_sql


def _touch() -> dict[str, int]:
    with connection.cursor() as cursor:
        cursor.execute(backend_id_sql())
        (backend,) = cursor.fetchone()
    return {"pid": os.getpid(), "backend": int(backend)}


#: Who imported this module, and on which server session.
STARTUP = _touch()
