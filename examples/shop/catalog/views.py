"""A couple of ordinary views: what a small Django page asks of its database."""

from __future__ import annotations

import os

from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.shortcuts import get_object_or_404

import django_sapool

from .models import Product


def products(request: HttpRequest) -> JsonResponse:
    """The first page of the catalogue and how many products there are."""
    page = list(Product.objects.order_by("id").values("id", "name")[:10])
    return JsonResponse({"count": Product.objects.count(), "products": page})


def product(request: HttpRequest, pk: int) -> JsonResponse:
    item = get_object_or_404(Product, pk=pk)
    return JsonResponse({"id": item.pk, "name": item.name, "stock": item.in_stock})


def pool_stats(request: HttpRequest) -> JsonResponse:
    """This worker's pool figures (empty with Django's stock backend)."""
    pooled = connection.settings_dict["ENGINE"].startswith("django_sapool.")
    stats = django_sapool.get_stats("default") if pooled else {}
    return JsonResponse({"pid": os.getpid(), "stats": stats})
