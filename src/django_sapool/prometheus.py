"""Prometheus export of get_stats(): ``pip install "django-sapool[prometheus]"``.

``django_sapool.prometheus.register()`` once per process (an AppConfig.ready()
or the gunicorn ``post_fork`` hook) adds a collector to prometheus_client's
registry: gauges and counters per alias, labelled with the process id, read
when scraped. Do not use pop_stats() in the same process: it resets the
counters Prometheus expects to only grow.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from prometheus_client.core import (
    REGISTRY,
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from .stats import COUNTERS, DESCRIPTIONS, GAUGES, get_stats

PREFIX = "django_sapool_"


class PoolCollector(Collector):
    """Collects this process's pool statistics at each scrape."""

    def collect(self) -> Iterator[Metric]:
        stats = get_stats()
        labels = ["alias", "pid"]
        pid = str(os.getpid())
        families: list[GaugeMetricFamily | CounterMetricFamily] = [
            GaugeMetricFamily(PREFIX + key, DESCRIPTIONS[key], labels=labels)
            for key in GAUGES
        ] + [
            CounterMetricFamily(PREFIX + key, DESCRIPTIONS[key], labels=labels)
            for key in COUNTERS
        ]
        for family, key in zip(families, (*GAUGES, *COUNTERS), strict=True):
            for alias, values in stats.items():
                family.add_metric([alias, pid], values[key])
            yield family


def register(registry: CollectorRegistry = REGISTRY) -> PoolCollector:
    """Add a PoolCollector to ``registry`` (prometheus_client's default)."""
    collector = PoolCollector()
    registry.register(collector)
    return collector
