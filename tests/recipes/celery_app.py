"""The Celery recipe: prefork workers, each disposing the pools it inherited.

The worker's main process touches the database at import (tests.recipes.startup),
as a project whose modules query at import does, before it forks its pool:
each pool process must open sessions of its own and leave the main process's
session alone.
"""

from __future__ import annotations

import os
from typing import Any

import django
from celery import Celery
from celery.signals import worker_process_init

import django_sapool

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.recipes.settings")
django.setup()

app = Celery("recipes")
app.config_from_object("django.conf:settings", namespace="CELERY")


def dispose_inherited_pools(**kwargs: Any) -> None:
    """In each new pool process: start without the main process's pools."""
    django_sapool.dispose()


def backend() -> dict[str, Any]:
    """Which pool process and server session ran this task."""
    from tests.recipes.views import report

    return report()


# As decorators (@worker_process_init.connect, @app.task) in a project; called
# here because celery has no type hints and mypy rejects untyped decorators.
worker_process_init.connect(dispose_inherited_pools)
backend_task = app.task(backend, name="tests.recipes.celery_app.backend")

import tests.recipes.startup  # noqa: E402, F401  (touches the database)
