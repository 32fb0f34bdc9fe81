"""The OpenTelemetry listener queues durations: bounded, and all recorded."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from django_sapool import opentelemetry as sapool_otel
from django_sapool._reaper import reaper
from tests.support.forking import in_child, python_fork


class FakePool:
    alias = "queued"


def histogram_counts(reader: InMemoryMetricReader) -> dict[str, int]:
    data = reader.get_metrics_data()
    assert data is not None
    counts: dict[str, int] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points: Any = metric.data.data_points
                if metric.name.endswith(("wait_time", "use_time")):
                    counts[metric.name] = sum(point.count for point in points)
    return counts


@pytest.fixture
def instruments() -> Any:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    meter = provider.get_meter("test")
    yield sapool_otel._Instruments(meter), reader
    provider.shutdown()


def test_a_checkout_only_queues_and_a_collection_records_it_all(
    instruments: Any,
) -> None:
    listener, reader = instruments
    pool: Any = FakePool()
    for _ in range(10):
        listener.checkout_ended(pool, 0.001, None)
        listener.returned(pool, 0.002)
    assert len(listener._queued) == 20
    listener.flush()
    assert histogram_counts(reader) == {
        "db.client.connection.wait_time": 10,
        "db.client.connection.use_time": 10,
    }


def test_the_queue_stays_bounded_when_nothing_collects(instruments: Any) -> None:
    """Past FLUSH_AT the pool's background thread records the queue: no
    checkout pays for thousands of record() calls."""
    listener, reader = instruments
    pool: Any = FakePool()
    reaper.start()
    for _ in range(3 * sapool_otel.FLUSH_AT):
        listener.checkout_ended(pool, 0.001, None)
        listener.returned(pool, 0.002)
    reaper.wait_idle()
    assert len(listener._queued) < sapool_otel.FLUSH_AT
    listener.flush()
    counts = histogram_counts(reader)
    assert counts["db.client.connection.wait_time"] == 3 * sapool_otel.FLUSH_AT


def test_a_stuck_background_thread_cannot_grow_the_queue_for_ever(
    instruments: Any,
) -> None:
    listener, _reader = instruments
    pool: Any = FakePool()
    listener._flushing = True  # as if its background flush never ran
    for _ in range(sapool_otel.INLINE_AT):
        listener.checkout_ended(pool, 0.001, None)
    assert len(listener._queued) < sapool_otel.FLUSH_AT


def test_a_forked_child_starts_with_no_pending_flush() -> None:
    """A fork while a background flush is pending must not leave the child
    waiting for one that will never run (it would record inline, much later)."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    sapool_otel.instrument(provider)
    try:
        listener = sapool_otel._instruments
        assert listener is not None
        listener._flushing = True  # queued in the parent's reaper, not run yet
        pool: Any = FakePool()
        listener.checkout_ended(pool, 0.001, None)

        def child() -> dict[str, Any]:
            forked = sapool_otel._instruments
            assert forked is not None
            return {"flushing": forked._flushing, "queued": len(forked._queued)}

        # The queue is kept, as the SDK's inherited figures are (see
        # test_opentelemetry.py: a child reports the parent's copy too).
        assert in_child(python_fork, child) == {"flushing": False, "queued": 1}
        assert len(listener._queued) == 1  # the parent's own are kept
    finally:
        sapool_otel.uninstrument()
        provider.shutdown()
