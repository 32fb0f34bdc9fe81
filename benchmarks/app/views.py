from __future__ import annotations

import random

from django.http import HttpRequest, JsonResponse

from benchmarks.app.models import Item


def catalog(request: HttpRequest) -> JsonResponse:
    """A typical small page: three simple queries."""
    item = Item.objects.get(pk=random.randint(1, 1000))
    in_stock = Item.objects.filter(stock__gt=0).count()
    cheapest = list(Item.objects.order_by("price").values_list("name", flat=True)[:5])
    return JsonResponse({"item": item.name, "in_stock": in_stock, "cheapest": cheapest})
