"""Pool statistics per alias, in the style of psycopg_pool's ``get_stats()``.

Counters live per alias, not per pool, so they survive ``dispose()`` and the
test runner's switch to another database; a forked child starts from zero.
Gauges are read from this process's current pools when asked; a pooled alias
of ``DATABASES`` reports its configured sizes before its first checkout. The
keys are psycopg_pool's, with psycopg_pool's meanings, plus a few of ours;
stable, and documented in docs/observability.md. Nothing here ever holds a
password.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, overload

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connections
from django.db.utils import load_backend

from . import _fork, _registry
from .config import PoolConfig

if TYPE_CHECKING:
    from ._pool import DatabasePool

#: Gauges: the state of this process's pools right now. The first five are
#: psycopg_pool's keys with psycopg_pool's meaning; the others are ours.
GAUGES = (
    "pool_min",
    "pool_max",
    "pool_size",
    "pool_available",
    "requests_waiting",
    "pool_used",
    "pool_overflow",
)
#: Counters: events since the process started, or since the last pop_stats().
#: psycopg_pool's keys with psycopg_pool's meaning, then ours.
COUNTERS = (
    "requests_num",
    "requests_queued",
    "requests_wait_ms",
    "requests_errors",
    "returns_bad",
    "connections_num",
    "connections_ms",
    "connections_errors",
    "connections_lost",
    "requests_timeouts",
    "connections_recycled",
)
#: The keys psycopg_pool's get_stats() has too, with the same meaning.
PSYCOPG_KEYS = frozenset(GAUGES[:5] + COUNTERS[:9])


#: What each key means (README table, Prometheus help texts).
DESCRIPTIONS = {
    "pool_min": (
        "configured pool_size: connections the pool keeps open once opened "
        "(psycopg_pool's min_size)"
    ),
    "pool_max": (
        "pool_size + max_overflow: most connections at once; -1 for no limit "
        "(max_overflow=-1)"
    ),
    "pool_size": "connections managed now: lent, idle, or being opened",
    "pool_available": "connections idle in the pool now",
    "requests_waiting": "checkouts in progress: waiting for, or opening, a connection",
    "pool_used": "connections lent to Django now",
    "pool_overflow": "connections open beyond pool_size now",
    "requests_num": "checkouts asked for",
    "requests_queued": (
        "checkouts that found no idle connection: they waited for one or opened one"
    ),
    "requests_wait_ms": "total time spent in checkouts, opening connections included",
    "requests_errors": (
        "checkouts that failed: timeouts (PoolTimeout), an unreachable server "
        "(ServerUnavailable), a failed connect"
    ),
    "returns_bad": (
        "connections given back unusable (broken after an error) or that could "
        "not be reset, so closed instead of pooled"
    ),
    "connections_num": "attempts to open a connection, failed ones included",
    "connections_ms": "total time spent opening connections (successful attempts)",
    "connections_errors": "failed attempts to open a connection",
    "connections_lost": (
        "connections found broken in the pool: failed pre-ping, or a "
        "disconnect detected at checkout"
    ),
    "requests_timeouts": "checkouts that raised PoolTimeout (also in requests_errors)",
    "connections_recycled": (
        "connections replaced at checkout for age (recycle) or after a "
        "disconnect elsewhere in the pool"
    ),
}


class PoolStats:
    """The counters of one alias in this process; safe to update from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Floats: milliseconds add up unrounded; snapshot() gives integers.
        self._counts: dict[str, float] = dict.fromkeys(COUNTERS, 0.0)
        #: One item per checkout in progress (waiting for a connection or
        #: opening one): a checkout appends, and pops when it ends.
        self.waiting: collections.deque[None] = collections.deque()
        #: How long each checkout ended since the last fold took, in seconds:
        #: appended by the checkout, folded into requests_num and
        #: requests_wait_ms by checkout_ended() once there are FOLD_AT, or
        #: when read. deque operations are atomic: a checkout takes no lock.
        self.waits: collections.deque[float] = collections.deque()
        #: The configuration of the alias's latest pool: its sizes are
        #: reported while it has none (after dispose()).
        self.config: PoolConfig | None = None

    def add(self, key: str, value: float = 1) -> None:
        with self._lock:
            self._counts[key] += value

    def checkout_ended(self, failure: str | None) -> None:
        """Count the checkouts in ``waits``; ``failure``: the last one failed,
        "requests_errors" or "requests_timeouts" (a timeout counts in both)."""
        with self._lock:
            self._fold()
            if failure is not None:
                self._counts["requests_errors"] += 1
                if failure != "requests_errors":
                    self._counts[failure] += 1

    def snapshot(self, *, reset: bool) -> dict[str, int]:
        with self._lock:
            self._fold()
            counts = {key: int(value) for key, value in self._counts.items()}
            if reset:
                self._counts = dict.fromkeys(COUNTERS, 0.0)
        return counts

    def _fold(self) -> None:
        waits, taken, total = self.waits, 0, 0.0
        while waits:  # others may append meanwhile: take what is there
            total += waits.popleft()
            taken += 1
        self._counts["requests_num"] += taken
        self._counts["requests_wait_ms"] += total * 1000


#: Ended checkouts a PoolStats holds before it counts them.
FOLD_AT = 256


#: Counters per alias: they outlive the alias's pools.
_stats: dict[str, PoolStats] = {}


def stats_for(alias: str) -> PoolStats:
    """The counters of ``alias`` in this process, made at first use."""
    _fork.check()
    stats = _stats.get(alias)
    if stats is None:  # setdefault is atomic: one PoolStats per alias
        stats = _stats.setdefault(alias, PoolStats())
    return stats


def _forget_parent() -> None:
    _stats.clear()  # the child's own figures start now


_fork.on_child(_forget_parent)


@overload
def get_stats(alias: str) -> dict[str, int]: ...
@overload
def get_stats(alias: None = None) -> dict[str, dict[str, int]]: ...
def get_stats(alias: str | None = None) -> dict[str, int] | dict[str, dict[str, int]]:
    """This process's pool statistics for ``alias``, or for every pooled alias.

    Every pooled alias of ``DATABASES`` is there from the start (its
    configured sizes, zeros elsewhere), and any other alias that has had a
    pool. An alias that is neither raises ValueError naming the known ones.
    """
    return _collect(alias, reset=False)


@overload
def pop_stats(alias: str) -> dict[str, int]: ...
@overload
def pop_stats(alias: None = None) -> dict[str, dict[str, int]]: ...
def pop_stats(alias: str | None = None) -> dict[str, int] | dict[str, dict[str, int]]:
    """Like get_stats(), then set the counters back to zero (gauges stay)."""
    return _collect(alias, reset=True)


def gauges(alias: str | None = None) -> dict[str, dict[str, int]]:
    """Only the gauges, per alias (``alias`` alone if given): no counter is read."""
    pools = _registry.pools()
    configured = configured_aliases()
    names = [alias] if alias is not None else _known(configured)
    return {
        name: _gauges(name, pools, _stats.get(name), configured.get(name))
        for name in names
    }


def configured_aliases() -> dict[str, PoolConfig | None]:
    """The aliases of ``DATABASES`` whose ENGINE pools, with their configuration.

    None for an alias whose pool options are wrong: its first connection
    raises ImproperlyConfigured, and ``manage.py check`` says why.
    """
    if not settings.configured:
        return {}
    found: dict[str, PoolConfig | None] = {}
    for name, settings_dict in connections.settings.items():
        engine = settings_dict.get("ENGINE")
        if not engine:
            continue
        try:
            wrapper_class = load_backend(engine).DatabaseWrapper
        except Exception:  # not ours to report here
            continue
        if not hasattr(wrapper_class, "sapool_dialect_url"):
            continue  # not a pooled ENGINE
        try:
            found[name] = PoolConfig.from_settings(name, settings_dict)
        except ImproperlyConfigured:
            found[name] = None
    return found


def _known(configured: Mapping[str, PoolConfig | None]) -> list[str]:
    return sorted({*configured, *_stats})


def _collect(
    alias: str | None, *, reset: bool
) -> dict[str, int] | dict[str, dict[str, int]]:
    pools = _registry.pools()
    configured = configured_aliases()
    if alias is not None:
        if alias not in configured and alias not in _stats:
            known = ", ".join(repr(name) for name in _known(configured)) or "none"
            raise ValueError(
                f"No pooled database alias {alias!r} in this process. Pooled "
                f"aliases: {known}."
            )
        return _alias_stats(alias, pools, configured.get(alias), reset=reset)
    return {
        name: _alias_stats(name, pools, configured.get(name), reset=reset)
        for name in _known(configured)
    }


def _alias_stats(
    alias: str,
    pools: list[DatabasePool],
    config: PoolConfig | None,
    *,
    reset: bool,
) -> dict[str, int]:
    stats = _stats.get(alias)  # None: no checkout yet, nothing to count
    counters = stats.snapshot(reset=reset) if stats else dict.fromkeys(COUNTERS, 0)
    return {**_gauges(alias, pools, stats, config), **counters}


def _gauges(
    alias: str,
    pools: list[DatabasePool],
    stats: PoolStats | None,
    config: PoolConfig | None,
) -> dict[str, int]:
    values = dict.fromkeys(GAUGES, 0)
    for pool in pools:
        if pool.alias != alias:
            continue
        config = pool.config  # the one in use
        for key, value in pool.gauges().items():
            values[key] += value
    if config is None and stats is not None:
        config = stats.config
    if config is not None:
        values["pool_min"] = config.pool_size
        values["pool_max"] = config.pool_max
    if stats is not None:
        values["requests_waiting"] = len(stats.waiting)
    return values
