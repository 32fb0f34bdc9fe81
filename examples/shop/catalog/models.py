from __future__ import annotations

from django.db import models


class Product(models.Model):
    """A product in the example shop."""

    name = models.CharField(max_length=100)
    price_cents = models.PositiveIntegerField()
    in_stock = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return self.name
