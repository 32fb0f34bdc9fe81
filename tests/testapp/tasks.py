"""Django 6.0 tasks for tests/test_django_tasks.py (imported there only on 6.0+)."""

from __future__ import annotations

from django.db import connection
from django.tasks import task

from tests.support.server import backend_id_sql
from tests.testapp.models import Item


@task
def add_item(name: str) -> int:
    """Insert a row; return the server session that ran the task."""
    Item.objects.create(name=name)
    with connection.cursor() as cursor:
        cursor.execute(backend_id_sql())
        return int(cursor.fetchone()[0])
