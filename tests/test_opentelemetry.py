"""OpenTelemetry's db.client.connection.* instruments report what the server saw."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import django_sapool
from django_sapool import _listeners
from django_sapool import opentelemetry as sapool_otel
from tests.support.pool_alias import PoolAliasFactory
from tests.support.server import Observer, backend_id

pytestmark = pytest.mark.django_db(transaction=True)

POOL_NAME = "db.client.connection.pool.name"
#: name: (instrument kind in the SDK's data, unit), as the conventions say.
CONVENTIONS = {
    "db.client.connection.count": ("Sum", "{connection}"),
    "db.client.connection.max": ("Sum", "{connection}"),
    "db.client.connection.idle.max": ("Sum", "{connection}"),
    "db.client.connection.idle.min": ("Sum", "{connection}"),
    "db.client.connection.pending_requests": ("Sum", "{request}"),
    "db.client.connection.timeouts": ("Sum", "{timeout}"),
    "db.client.connection.create_time": ("Histogram", "s"),
    "db.client.connection.wait_time": ("Histogram", "s"),
    "db.client.connection.use_time": ("Histogram", "s"),
}
#: Up-down counters are non-monotonic sums; the timeouts counter is monotonic.
MONOTONIC = {"db.client.connection.timeouts"}


class Reading:
    """One collection by the SDK's in-memory reader, for one pool name."""

    def __init__(self, reader: InMemoryMetricReader, alias: str) -> None:
        data = reader.get_metrics_data()
        self.metrics: dict[str, Any] = {}
        self.points: dict[str, list[Any]] = {}
        assert data is not None
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    self.metrics[metric.name] = metric
                    self.points[metric.name] = [
                        point
                        for point in metric.data.data_points
                        if (point.attributes or {}).get(POOL_NAME) == alias
                    ]

    def value(self, name: str, **attributes: str) -> Any:
        [point] = [
            point
            for point in self.points.get(name, [])
            if all(
                point.attributes.get(f"db.client.connection.{key}") == value
                for key, value in attributes.items()
            )
        ]
        return point

    def count(self, name: str) -> int:
        """A histogram's count, 0 if nothing was recorded for the pool."""
        points = self.points.get(name, [])
        return sum(point.count for point in points)


def mine(listeners: tuple[object, ...]) -> int:
    """How many of the pools' listeners are OpenTelemetry's."""
    return sum(type(item).__module__ == sapool_otel.__name__ for item in listeners)


@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    sapool_otel.instrument(meter_provider=provider)
    try:
        yield reader
    finally:
        sapool_otel.uninstrument()
        provider.shutdown()


@pytest.mark.direct_server(reason="counts the server sessions the pool opened")
def test_instruments_match_the_server(
    reader: InMemoryMetricReader, pool_alias: PoolAliasFactory, observer: Observer
) -> None:
    alias = pool_alias(pool_size=1, max_overflow=1, timeout=0.3)
    seen: set[int] = set()
    first, second, third = alias.wrapper(), alias.wrapper(), alias.wrapper()
    for _ in range(3):  # reuse: one server session, three loans
        seen.add(backend_id(first))
        first.close()
    assert len(seen) == 1
    seen.add(backend_id(first))
    seen.add(backend_id(second))  # an overflow connection: a second session
    assert len(observer.alive(seen)) == len(seen) == 2
    holding = Reading(reader, alias.name)
    assert holding.value("db.client.connection.count", state="used").value == 2
    assert holding.value("db.client.connection.count", state="idle").value == 0
    assert holding.value("db.client.connection.max").value == 2
    assert holding.value("db.client.connection.idle.max").value == 1
    assert holding.value("db.client.connection.idle.min").value == 0
    assert holding.value("db.client.connection.pending_requests").value == 0
    with pytest.raises(django_sapool.PoolTimeout):
        third.connect()  # one timeout
    time.sleep(0.1)  # the loans last at least this long
    first.close()
    second.close()  # the overflow connection closes as it comes back

    reading = Reading(reader, alias.name)
    stats = django_sapool.get_stats(alias.name)
    checkouts, returns = 6, 5  # 3 + 2 + the one that timed out; all lent back
    assert reading.count("db.client.connection.create_time") == len(seen)
    assert reading.count("db.client.connection.wait_time") == checkouts
    assert stats["requests_num"] == checkouts
    assert reading.count("db.client.connection.use_time") == returns
    assert reading.value("db.client.connection.timeouts").value == 1
    wait = reading.value("db.client.connection.wait_time")
    assert wait.max >= 0.3 * 0.9  # the timed-out checkout waited its timeout
    assert reading.value("db.client.connection.use_time").max >= 0.1
    assert reading.value("db.client.connection.count", state="used").value == 0
    assert reading.value("db.client.connection.count", state="idle").value == len(
        observer.alive(seen)
    )
    for name, (kind, unit) in CONVENTIONS.items():
        metric = reading.metrics[name]
        assert (type(metric.data).__name__, metric.unit) == (kind, unit), name
        if kind == "Sum":
            assert metric.data.is_monotonic == (name in MONOTONIC), name


def test_instrument_twice_counts_once_and_uninstrument_stops(
    reader: InMemoryMetricReader, pool_alias: PoolAliasFactory
) -> None:
    sapool_otel.instrument()  # already instrumented: nothing changes
    assert mine(_listeners.registered) == 1
    alias = pool_alias(pool_size=1)
    wrapper = alias.wrapper()
    for _ in range(3):
        wrapper.ensure_connection()
        wrapper.close()
    assert Reading(reader, alias.name).count("db.client.connection.wait_time") == 3
    sapool_otel.uninstrument()
    assert mine(_listeners.registered) == 0
    wrapper.ensure_connection()
    wrapper.close()
    reading = Reading(reader, alias.name)
    assert reading.count("db.client.connection.wait_time") == 3
    assert reading.points.get("db.client.connection.count", []) == []


def test_a_forked_child_reports_its_own_pools(
    reader: InMemoryMetricReader, pool_alias: PoolAliasFactory
) -> None:
    alias = pool_alias(pool_size=1)
    wrapper = alias.wrapper()
    wrapper.ensure_connection()
    wrapper.close()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a pool of its own, reported; leave without cleanup
        try:
            child = alias.wrapper()
            for _ in range(2):
                child.ensure_connection()
                child.close()
            reading = Reading(reader, alias.name)
            idle = reading.value("db.client.connection.count", state="idle")
            # The SDK's figures are the parent's copy plus the child's own.
            ok = (
                reading.count("db.client.connection.wait_time") == 3
                and reading.count("db.client.connection.create_time") == 2
                and idle.value == 1
            )
            os.write(write, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(write)
    try:
        assert os.read(read, 1) == b"1"
    finally:
        os.close(read)
        os.waitpid(pid, 0)
