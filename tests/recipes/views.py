"""Views that report which process and which server session served the request."""

from __future__ import annotations

import os
import sys
from typing import Any

from asgiref.sync import sync_to_async
from django.db import connection
from django.http import HttpRequest, JsonResponse

from tests.support.server import backend_id_sql


def report() -> dict[str, Any]:
    """This process, its server session, and who touched the database at import."""
    with connection.cursor() as cursor:
        # Hold the connection a little, so that concurrent requests need several.
        pause = "pg_sleep" if connection.vendor == "postgresql" else "SLEEP"
        cursor.execute(f"SELECT {pause}(0.02)")
        cursor.execute(backend_id_sql())
        (backend,) = cursor.fetchone()
    # Not imported here: under ASGI the import would query in the event loop.
    startup = getattr(sys.modules.get("tests.recipes.startup"), "STARTUP", None)
    return {
        "pid": os.getpid(),
        "backend": int(backend),
        "startup": startup,
        "pool": id(connection._sapool_pool),  # type: ignore[attr-defined]
    }


def backend(request: HttpRequest) -> JsonResponse:
    return JsonResponse(report())


async def backend_async(request: HttpRequest) -> JsonResponse:
    """The async view: the ORM runs in a worker thread, as Django requires."""
    return JsonResponse(await sync_to_async(report)())
