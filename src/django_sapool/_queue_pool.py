"""SQLAlchemy's QueuePool, with what we do to its queue and its records."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy.pool import QueuePool
from sqlalchemy.util import queue as sqla_queue

from ._record_keys import RETURNED

if TYPE_CHECKING:
    from sqlalchemy.pool import ConnectionPoolEntry


class FastQueuePool(QueuePool):
    """SQLAlchemy's QueuePool, told about returns that release() did not reset,
    and taking or putting back an idle connection in one step.

    Its queue's ``get()`` and ``put()`` go through a Condition's Python-level
    methods every time; when a connection is at hand (or a slot free) the
    same is done here under the queue's own lock, and anything else (waiting,
    overflow, a full queue) is left to QueuePool. A slot made ready for its
    next borrower comes back through ``put_back()``; every other return
    (SQLAlchemy's own, a discarded or collected loan's) through
    ``_do_return_conn()``, which tells ``returned_unreset`` first. A "checkin"
    event listener would cost every return more.
    """

    returned_unreset: Callable[[ConnectionPoolEntry], None]

    def _do_get(self) -> ConnectionPoolEntry:
        queue: sqla_queue.Queue[ConnectionPoolEntry] = self._pool  # type: ignore[assignment]
        with queue.mutex:
            idle = queue.queue
            if idle:  # nobody waits to put: returns never block
                return idle.pop() if queue.use_lifo else idle.popleft()
        return super()._do_get()

    def _do_return_conn(self, record: ConnectionPoolEntry) -> None:
        self.returned_unreset(record)
        self.put_back(record)

    def put_back(self, record: ConnectionPoolEntry) -> None:
        """Give back a slot whose connection is ready for its next borrower
        (or that holds none)."""
        queue: sqla_queue.Queue[ConnectionPoolEntry] = self._pool  # type: ignore[assignment]
        with queue.mutex:
            idle = queue.queue
            if len(idle) < queue.maxsize:
                idle.append(record)
                if queue.not_empty._waiters:  # type: ignore[attr-defined]
                    queue.not_empty.notify()
                return
        super()._do_return_conn(record)  # full: an overflow one is closed

    def invalidate_older(self, record: ConnectionPoolEntry) -> None:
        """Every connection opened before ``record``'s is replaced at checkout."""
        entry: Any = record  # starttime is SQLAlchemy's, not in its interface
        if self._invalidate_time < entry.starttime:
            self._invalidate_time = time.time()

    def jitter_age(self, record: ConnectionPoolEntry, most: float) -> None:
        """Make a new connection look up to ``most`` seconds older.

        QueuePool recycles a connection at checkout once ``time.time() -
        starttime`` exceeds ``recycle``; an earlier start, drawn per
        connection, spreads the replacement of connections opened together.
        """
        shift = random.uniform(0, most)
        # Not before a pool-wide invalidation (a detected disconnect): the
        # connection would look older than it and be replaced needlessly.
        invalidated_at = self._invalidate_time
        entry: Any = record  # starttime is SQLAlchemy's, not in its interface
        if invalidated_at:
            shift = min(shift, max(0.0, entry.starttime - invalidated_at - 0.001))
        entry.starttime -= shift

    def open_idle(self) -> bool:
        """Open one connection straight into the queue, if a slot is free.

        Only into free capacity (below pool_size): False, and nothing opened,
        once the pool holds that many; it never waits.
        """
        if self.overflow() >= 0 or not self._inc_overflow():
            return False
        try:
            record = self._create_connection()
        except BaseException:
            self._dec_overflow()
            raise
        record.info[RETURNED] = time.monotonic()
        self.put_back(record)  # fresh: nothing to reset
        return True


def wait_slice(timeout: float, unreachable_wait: float | None) -> float:
    """How long one wait for a free connection lasts (QueuePool's ``timeout``).

    While the server is failing, waiting the full timeout for a connection to
    come back would only delay the same failure, so a checkout looks up at the
    end of each slice (see DatabasePool._wait_for_connection). Slices divide
    ``timeout`` evenly, none longer than ``unreachable_wait`` (nor shorter
    than 0.1 s), so a checkout gives up on time either way.
    """
    if unreachable_wait is None:
        return timeout
    slices = math.ceil(timeout / max(unreachable_wait, 0.1))
    return timeout / max(slices, 1)
