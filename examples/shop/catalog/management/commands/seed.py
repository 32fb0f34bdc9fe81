"""``manage.py seed``: a catalogue of 200 products, the same on every run."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand
from django.db import transaction

from catalog.models import Product


class Command(BaseCommand):
    help = "Replace the catalogue with 200 sample products."

    def handle(self, *args: Any, **options: Any) -> None:
        with transaction.atomic():
            Product.objects.all().delete()
            Product.objects.bulk_create(
                Product(name=f"Product {n}", price_cents=100 + n, in_stock=n % 7)
                for n in range(1, 201)
            )
        self.stdout.write("seeded 200 products")
