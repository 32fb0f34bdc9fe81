from __future__ import annotations

from django.db import connection
from django.http import HttpRequest, JsonResponse

from tests.support.server import backend_id_sql


def backend(request: HttpRequest) -> JsonResponse:
    """One request: which server session served it."""
    with connection.cursor() as cursor:
        cursor.execute(backend_id_sql())
        (backend_id,) = cursor.fetchone()
    return JsonResponse({"backend": backend_id})
