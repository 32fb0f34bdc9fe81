"""Prometheus export: ``pip install "django-sapool[prometheus]"``.

``django_sapool.prometheus.register()`` once per process, or more often: a
second call changes nothing (say, in an ``AppConfig.ready()`` and again in
gunicorn's ``post_fork``). It exports every get_stats() key per alias, and
three histograms (wait, connect and loan times) fed by the pools' hooks.

One process (runserver, a single worker): a collector on prometheus_client's
registry reads get_stats() at each scrape, labelled ``alias`` and ``pid``.

Several worker processes (gunicorn, uWSGI): with ``PROMETHEUS_MULTIPROC_DIR``
set, prometheus_client's multiprocess mode. Each process copies its figures
into that directory every second (a daemon thread of its own, restarted in
forked children); ``metrics_view`` (or a MultiProcessCollector of your own)
shows every live worker's gauges, labelled ``pid``, and the counters and
histograms summed over all workers. gunicorn's ``child_exit`` hook (below)
drops a dead worker's gauges. docs/observability.md has the recipe.

Do not use pop_stats() in a process that exports: it resets the counters
Prometheus expects to only grow.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from . import _fork
from ._listeners import add_listener
from .stats import COUNTERS, DESCRIPTIONS, GAUGES, get_stats

if TYPE_CHECKING:
    from django.http import HttpRequest, HttpResponse

    from ._pool import DatabasePool

__all__ = [
    "BUCKETS",
    "PoolCollector",
    "child_exit",
    "metrics_view",
    "multiprocess_mode",
    "register",
]

PREFIX = "django_sapool_"
#: Histogram buckets in seconds: a checkout served from the pool takes tens
#: of microseconds, a connect milliseconds, a pool timeout 30 s by default.
BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    float("inf"),
)
#: Seconds between two copies of a process's figures in multiprocess mode.
MIRROR_INTERVAL = 1.0


def multiprocess_mode() -> bool:
    """Whether prometheus_client writes to PROMETHEUS_MULTIPROC_DIR here."""
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


class _Histograms:
    """The three histograms, fed by every pool of the process (a PoolListener)."""

    def __init__(self) -> None:
        def histogram(name: str, documentation: str) -> Histogram:
            # No registry: PoolCollector yields them (one process), or
            # prometheus_client writes them to its directory (multiprocess).
            return Histogram(
                PREFIX + name,
                documentation,
                labelnames=["alias"],
                buckets=BUCKETS,
                registry=None,
            )

        self.wait = histogram(
            "connection_wait_seconds",
            "time to obtain a connection from the pool (every checkout, failed "
            "ones included)",
        )
        self.create = histogram(
            "connection_create_seconds", "time to open a new connection"
        )
        self.use = histogram(
            "connection_use_seconds",
            "time from a checkout to the connection's return to the pool",
        )
        # The labelled children, made once per alias.
        self._children: dict[tuple[Histogram, str], Any] = {}

    def child(self, histogram: Histogram, alias: str) -> Any:
        child = self._children.get((histogram, alias))
        if child is None:
            child = self._children.setdefault(
                (histogram, alias), histogram.labels(alias)
            )
        return child

    def collect(self) -> Iterator[Metric]:
        for histogram in (self.wait, self.create, self.use):
            yield from histogram.collect()

    # PoolListener ----------------------------------------------------------

    def checkout_ended(
        self, pool: DatabasePool, waited: float, failure: str | None
    ) -> None:
        self.child(self.wait, pool.alias).observe(waited)

    def connected(self, pool: DatabasePool, seconds: float) -> None:
        self.child(self.create, pool.alias).observe(seconds)

    def returned(self, pool: DatabasePool, used: float) -> None:
        self.child(self.use, pool.alias).observe(used)


class PoolCollector(Collector):
    """Collects this process's pool statistics at each scrape."""

    def __init__(self, histograms: _Histograms | None = None) -> None:
        self._histograms = histograms

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
        if self._histograms is not None:
            yield from self._histograms.collect()


class _Mirror:
    """Multiprocess mode: copies get_stats() into prometheus_client's files."""

    def __init__(self) -> None:
        # "liveall": one series per live process (labelled pid by
        # prometheus_client); child_exit removes a dead worker's.
        self.gauges = {
            key: Gauge(
                PREFIX + key,
                DESCRIPTIONS[key],
                labelnames=["alias"],
                registry=None,
                multiprocess_mode="liveall",
            )
            for key in GAUGES
        }
        self.counters = {
            key: Counter(
                PREFIX + key, DESCRIPTIONS[key], labelnames=["alias"], registry=None
            )
            for key in COUNTERS
        }
        #: Held while copying; a fork waits for it, so that no child starts
        #: with prometheus_client's lock taken by this process's thread.
        self.lock = threading.Lock()
        self._copied: dict[tuple[str, str], int] = {}
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._copied.clear()  # a forked child's counters start at zero
        self._thread = threading.Thread(
            target=self._run, name="django_sapool prometheus", daemon=True
        )
        self._thread.start()

    def copy(self) -> None:
        with self.lock:
            for alias, values in get_stats().items():
                for key, gauge in self.gauges.items():
                    gauge.labels(alias).set(values[key])
                for key, counter in self.counters.items():
                    before = self._copied.get((alias, key), 0)
                    value = values[key]
                    # Below the last copy: pop_stats() reset it meanwhile.
                    delta = value - before if value >= before else value
                    if delta:
                        counter.labels(alias).inc(delta)
                    self._copied[(alias, key)] = value

    def _run(self) -> None:
        thread = self._thread
        while self._thread is thread:  # a child starts a thread of its own
            with contextlib.suppress(Exception):  # keep exporting
                self.copy()
            time.sleep(MIRROR_INTERVAL)


_lock = threading.Lock()
_histograms: _Histograms | None = None
_mirror: _Mirror | None = None
#: The registries our collector is in (a registry raises on a second one).
_collectors: dict[int, tuple[CollectorRegistry, PoolCollector]] = {}


def register(registry: CollectorRegistry = REGISTRY) -> PoolCollector:
    """Export this process's pools; calling it again changes nothing.

    ``registry``: prometheus_client's default. In multiprocess mode the
    figures also go to PROMETHEUS_MULTIPROC_DIR, whatever the registry.
    """
    global _histograms, _mirror
    with _lock:
        if _histograms is None:
            _histograms = _Histograms()
            add_listener(_histograms)
        if _mirror is None and multiprocess_mode():
            _mirror = _Mirror()
            _mirror.start()
            atexit.register(_last_copy)
        known = _collectors.get(id(registry))
        if known is not None and known[0] is registry:
            return known[1]
        collector = PoolCollector(_histograms)
        registry.register(collector)
        _collectors[id(registry)] = (registry, collector)
        return collector


def metrics_view(request: HttpRequest) -> HttpResponse:
    """A Django view for ``/metrics``: every worker's figures in multiprocess
    mode, else prometheus_client's default registry (this process's)."""
    from django.http import HttpResponse

    if multiprocess_mode():
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        if _mirror is not None:
            _mirror.copy()  # this worker's figures, up to date
    else:
        registry = REGISTRY
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


def child_exit(server: Any, worker: Any) -> None:
    """gunicorn's ``child_exit`` hook (in the master): drop the dead worker's
    gauges from PROMETHEUS_MULTIPROC_DIR; nothing outside multiprocess mode."""
    if multiprocess_mode():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def _last_copy() -> None:
    """At exit: the figures since the last copy (a forked child's, in a child)."""
    if _mirror is not None:
        _mirror.copy()


def _before_fork() -> None:
    if _mirror is not None:
        _mirror.lock.acquire()


def _after_fork_in_parent() -> None:
    if _mirror is not None:
        _mirror.lock.release()


def _after_fork_in_child() -> None:
    if _mirror is not None:
        _mirror.lock = threading.Lock()


def _restart_in_child() -> None:
    if _mirror is not None:
        _mirror.start()


os.register_at_fork(
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)
_fork.on_child(_restart_in_child)
