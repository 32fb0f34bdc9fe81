"""What a checkout lends: a pool slot (SQLAlchemy's connection record) and its
raw driver connection, without SQLAlchemy's per-checkout proxy.

The wrapper keeps the loan until it gives the connection back. A loan that is
garbage-collected first (its borrower is gone) tells its pool through a weak
reference, which frees the slot (see _abandoned). Loans are listed in
``_fork.lent`` while they last, so a fork can pin them.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import _fork

if TYPE_CHECKING:
    from sqlalchemy.pool import ConnectionPoolEntry

    from ._queue_pool import FastQueuePool


class Loan:
    """One checkout: the slot lent, its connection, and the slot's info dict."""

    __slots__ = ("__weakref__", "dbapi_connection", "info", "pool", "record", "ref")

    ref: LoanRef | None

    def __init__(
        self,
        pool: FastQueuePool,
        record: ConnectionPoolEntry,
        connection: Any,
        collected: Callable[[LoanRef], None],
    ) -> None:
        self.pool = pool
        self.record = record
        self.dbapi_connection = connection
        self.info = record.info
        ref = self.ref = LoanRef(self, collected)
        ref.record = record
        _lent[id(self)] = ref

    def end(self) -> ConnectionPoolEntry:
        """The loan is over (the slot goes back): collecting it does nothing now.

        Its weak reference is dropped too, so no callback runs when the loan
        is freed.
        """
        ref = self.ref
        if ref is not None:
            ref.record = None
            self.ref = None
            _lent.pop(id(self), None)
        return self.record


#: _fork.lent (a dict _fork never rebinds), one lookup away: a store and a
#: pop per loan.
_lent = _fork.lent


class LoanRef(weakref.ref[Loan]):
    """A weak reference to a loan that knows its slot, for the collected case."""

    __slots__ = ("record",)
    record: ConnectionPoolEntry | None
