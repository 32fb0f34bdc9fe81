"""OpenTelemetry pool metrics: ``pip install "django-sapool[opentelemetry]"``.

``django_sapool.opentelemetry.instrument()`` once per process, anywhere
(settings, an ``AppConfig.ready()``, gunicorn's ``post_fork``): from then on
every pool of the process, present and future, and those of forked children,
reports the semantic conventions' nine ``db.client.connection.*`` instruments.
Only ``opentelemetry-api`` is needed here; the SDK and its exporter are the
application's (docs/observability.md).

``db.client.connection.pool.name`` is the Django database alias: unique in a
process, the name the settings and the logs use. A checkout or a return
only queues its duration (the SDK's ``record()`` costs microseconds, more
than the checkout itself); the queue goes into the histograms when the SDK
collects, before it reads them, or, once it holds FLUSH_AT values, in the
pool's background thread (an SDK that never collects must not grow it, and
no request should record thousands of values). Past INLINE_AT, should that
thread be stuck, the checkout that finds the queue so long records it. The
gauges (count, max, idle.max, idle.min, pending_requests) are read from
get_stats()'s figures when the SDK collects, and cost nothing per checkout.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from opentelemetry import metrics
from opentelemetry.metrics import (
    CallbackOptions,
    Histogram,
    MeterProvider,
    Observation,
)

from . import _fork
from ._listeners import add_listener, remove_listener
from ._reaper import reaper
from .stats import gauges

if TYPE_CHECKING:
    from opentelemetry.util.types import Attributes

    from ._pool import DatabasePool

__all__ = ["POOL_NAME", "SECONDS_BUCKETS", "instrument", "uninstrument"]

POOL_NAME = "db.client.connection.pool.name"
STATE = "db.client.connection.state"
#: Histogram buckets in seconds, for waits, connects and loans alike: from a
#: checkout served from the pool (tens of µs) to a pool timeout (30 s default).
SECONDS_BUCKETS: Sequence[float] = (
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
)

_lock = threading.Lock()
#: Queued durations recorded in the background past this many, inline past
#: INLINE_AT (see the module docstring).
FLUSH_AT = 4096
INLINE_AT = 16 * FLUSH_AT


class _Instruments:
    """The synchronous instruments, told of each event by every pool."""

    def __init__(self, meter: metrics.Meter) -> None:
        self.create_time = meter.create_histogram(
            "db.client.connection.create_time",
            unit="s",
            description="The time it took to create a new connection.",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
        self.wait_time = meter.create_histogram(
            "db.client.connection.wait_time",
            unit="s",
            description="The time it took to obtain an open connection from the pool.",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
        self.use_time = meter.create_histogram(
            "db.client.connection.use_time",
            unit="s",
            description=(
                "The time between borrowing a connection and returning it to the pool."
            ),
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
        self.timeouts = meter.create_counter(
            "db.client.connection.timeouts",
            unit="{timeout}",
            description=(
                "The number of connection timeouts that have occurred trying to "
                "obtain a connection from the pool."
            ),
        )
        # Made once per alias and reused: the SDK keys its data by them.
        self._attributes: dict[str, Attributes] = {}
        #: (histogram, seconds, attributes) not recorded yet: appended by the
        #: pools' threads, drained by flush() (deque operations are atomic).
        self._queued: collections.deque[tuple[Histogram, float, Attributes]] = (
            collections.deque()
        )
        #: A background flush is queued and has not finished yet.
        self._flushing = False

    def flush(self) -> None:
        """Record what checkouts and returns queued."""
        queued = self._queued
        while True:  # others append meanwhile, or flush at once: take what is there
            try:
                histogram, seconds, attributes = queued.popleft()
            except IndexError:
                return
            histogram.record(seconds, attributes)

    def forget_parent(self) -> None:
        """In a forked child: the flush the parent's thread was to run will
        not run here. The queued durations stay, as the SDK's figures the
        child inherited do: both are the parent's state at the fork."""
        self._flushing = False

    def _flush_soon(self) -> None:
        if len(self._queued) >= INLINE_AT:
            self.flush()
        elif not self._flushing:
            self._flushing = True
            reaper.run_later(self._flush_in_background)

    def _flush_in_background(self) -> None:
        try:
            self.flush()
        finally:
            self._flushing = False

    def attributes(self, alias: str) -> Attributes:
        attributes = self._attributes.get(alias)
        if attributes is None:
            attributes = self._attributes.setdefault(alias, {POOL_NAME: alias})
        return attributes

    # PoolListener ----------------------------------------------------------

    def checkout_ended(
        self, pool: DatabasePool, waited: float, failure: str | None
    ) -> None:
        attributes = self.attributes(pool.alias)
        queued = self._queued
        queued.append((self.wait_time, waited, attributes))
        if failure == "requests_timeouts":
            self.timeouts.add(1, attributes)
        if len(queued) >= FLUSH_AT:
            self._flush_soon()

    def connected(self, pool: DatabasePool, seconds: float) -> None:
        self.create_time.record(seconds, self.attributes(pool.alias))

    def returned(self, pool: DatabasePool, used: float) -> None:
        self._queued.append((self.use_time, used, self.attributes(pool.alias)))


#: The instruments in use, None when not instrumented.
_instruments: _Instruments | None = None


def instrument(meter_provider: MeterProvider | None = None) -> None:
    """Report every pool of this process (and of its forked children).

    ``meter_provider``: the global one (``metrics.set_meter_provider()``) if
    None, even if it is set only later, in a forked worker. A second call
    does nothing until ``uninstrument()``.
    """
    global _instruments
    with _lock:
        if _instruments is not None:
            return
        from . import __version__

        meter = metrics.get_meter(
            "django_sapool", __version__, meter_provider=meter_provider
        )
        instruments = _Instruments(meter)
        for name, unit, description, callback in _OBSERVED:
            meter.create_observable_up_down_counter(
                name, callbacks=[callback], unit=unit, description=description
            )
        _instruments = instruments
        add_listener(instruments)


def uninstrument() -> None:
    """Stop reporting: the pools' hooks cost nothing again."""
    global _instruments
    with _lock:
        if _instruments is None:
            return
        remove_listener(_instruments)
        _instruments.flush()
        _instruments = None


# The gauges, read at collection; they report nothing once uninstrumented.


def _observe(key: str, options: CallbackOptions) -> Iterable[Observation]:
    if _instruments is None:
        return []
    return [
        Observation(values[key], _instruments.attributes(alias))
        for alias, values in gauges().items()
        if values[key] >= 0  # pool_max -1: no limit, nothing to report
    ]


def _count(options: CallbackOptions) -> Iterable[Observation]:
    if _instruments is None:
        return []
    # The SDK runs these callbacks before it reads the synchronous
    # instruments: the histograms get what was queued in time for this read.
    _instruments.flush()
    observations = []
    for alias, values in gauges().items():
        for state, key in (("idle", "pool_available"), ("used", "pool_used")):
            attributes = {POOL_NAME: alias, STATE: state}
            observations.append(Observation(values[key], attributes))
    return observations


def _max(options: CallbackOptions) -> Iterable[Observation]:
    return _observe("pool_max", options)


def _idle_max(options: CallbackOptions) -> Iterable[Observation]:
    # QueuePool keeps at most pool_size idle connections: the others close
    # as they come back.
    return _observe("pool_min", options)


def _idle_min(options: CallbackOptions) -> Iterable[Observation]:
    # QueuePool keeps no minimum of idle connections (prewarm opens some
    # once, at the first checkout, and keeps no floor).
    if _instruments is None:
        return []
    return [Observation(0, _instruments.attributes(alias)) for alias in gauges()]


def _pending(options: CallbackOptions) -> Iterable[Observation]:
    return _observe("requests_waiting", options)


_OBSERVED = (
    (
        "db.client.connection.count",
        "{connection}",
        "The number of connections that are currently in state described by "
        "the state attribute.",
        _count,
    ),
    (
        "db.client.connection.max",
        "{connection}",
        "The maximum number of open connections allowed.",
        _max,
    ),
    (
        "db.client.connection.idle.max",
        "{connection}",
        "The maximum number of idle open connections allowed.",
        _idle_max,
    ),
    (
        "db.client.connection.idle.min",
        "{connection}",
        "The minimum number of idle open connections allowed.",
        _idle_min,
    ),
    (
        "db.client.connection.pending_requests",
        "{request}",
        "The number of current pending requests for an open connection.",
        _pending,
    ),
)


def _forget_parent() -> None:
    if _instruments is not None:
        _instruments.forget_parent()


_fork.on_child(_forget_parent)
