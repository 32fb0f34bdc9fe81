from __future__ import annotations

from typing import ClassVar

from django.db import models


class Item(models.Model):
    """The seeded table (created by benchmarks/servers.py)."""

    name = models.CharField(max_length=100)
    price = models.DecimalField(max_digits=10, decimal_places=2)
    stock = models.IntegerField()

    # Explicit: mypy's Django plugin reads the tests' settings, not this app's.
    objects: ClassVar[models.Manager[Item]] = models.Manager()

    class Meta:
        managed = False
        db_table = "bench_item"
