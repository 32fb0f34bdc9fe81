"""Pool statistics per alias, in the style of psycopg_pool's ``get_stats()``.

Counters live per alias, not per pool, so they survive ``dispose()`` and the
test runner's switch to another database; a forked child starts from zero.
Gauges are read from this process's current pools when asked. The keys are
stable and documented in the README; nothing here ever holds a password.
"""

from __future__ import annotations

import collections
import threading
from typing import TYPE_CHECKING, overload

from . import _fork, _registry

if TYPE_CHECKING:
    from ._pool import DatabasePool

#: Counters: events since the process started, or since the last pop_stats().
COUNTERS = (
    "requests_num",
    "requests_wait_ms",
    "requests_timeouts",
    "requests_errors",
    "connections_num",
    "connections_ms",
    "connections_errors",
    "connections_invalidated",
    "connections_recycled",
    "reset_failures",
)
#: Gauges: the state of this process's pools right now.
GAUGES = (
    "pool_size",
    "pool_max",
    "connections_open",
    "checked_out",
    "idle",
    "overflow",
    "requests_waiting",
)


#: What each key means (README table, Prometheus help texts).
DESCRIPTIONS = {
    "pool_size": "configured pool_size: connections kept open",
    "pool_max": (
        "pool_size + max_overflow: most connections at once; -1 for no limit "
        "(max_overflow=-1)"
    ),
    "connections_open": "connections open now, lent or idle",
    "checked_out": "connections lent to Django now",
    "idle": "open connections waiting in the pool",
    "overflow": "connections open beyond pool_size",
    "requests_waiting": "checkouts in progress: waiting for, or opening, a connection",
    "requests_num": "checkouts asked for",
    "requests_wait_ms": "total time spent in checkouts, including opening connections",
    "requests_timeouts": "checkouts that raised PoolTimeout",
    "requests_errors": "checkouts that failed otherwise (the server refused, say)",
    "connections_num": "connections opened",
    "connections_ms": "total time spent opening connections",
    "connections_errors": "failed attempts to open a connection",
    "connections_invalidated": (
        "connections discarded as broken: failed pre-ping, disconnect, "
        "or unusable after an error"
    ),
    "connections_recycled": (
        "connections replaced at checkout for age (recycle) or after a "
        "disconnect elsewhere in the pool"
    ),
    "reset_failures": "returned connections closed because they could not be reset",
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

    def add(self, key: str, value: float = 1) -> None:
        with self._lock:
            self._counts[key] += value

    def checkout_ended(self, failure: str | None) -> None:
        """Count the checkouts in ``waits``; ``failure``: the last one failed so."""
        with self._lock:
            self._fold()
            if failure is not None:
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
    """This process's pool statistics for ``alias``, or for every pooled alias."""
    return _collect(alias, reset=False)


@overload
def pop_stats(alias: str) -> dict[str, int]: ...
@overload
def pop_stats(alias: None = None) -> dict[str, dict[str, int]]: ...
def pop_stats(alias: str | None = None) -> dict[str, int] | dict[str, dict[str, int]]:
    """Like get_stats(), then set the counters back to zero (gauges stay)."""
    return _collect(alias, reset=True)


def _collect(
    alias: str | None, *, reset: bool
) -> dict[str, int] | dict[str, dict[str, int]]:
    pools = _registry.pools()
    if alias is not None:
        return _alias_stats(alias, pools, reset=reset)
    aliases = sorted(_stats)
    return {name: _alias_stats(name, pools, reset=reset) for name in aliases}


def _alias_stats(
    alias: str, pools: list[DatabasePool], *, reset: bool
) -> dict[str, int]:
    stats = stats_for(alias)
    gauges = dict.fromkeys(GAUGES, 0)
    for pool in pools:
        if pool.alias != alias:
            continue
        for key, value in pool.gauges().items():
            # Configured sizes are the same for every pool of an alias.
            if key in {"pool_size", "pool_max"}:
                gauges[key] = value
            else:
                gauges[key] += value
    gauges["requests_waiting"] = len(stats.waiting)
    return {**gauges, **stats.snapshot(reset=reset)}
