"""Loans that end without release(): a collected borrower, an ended thread.

This runs inside the garbage collector or a thread's finaliser, in any
thread: no I/O and none of our locks here. The pool slot is freed at once;
the reaper thread closes the connection later, and the server rolls back what
its borrower left open. In a forked child the socket is the parent's: it is
kept, untouched.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from . import _fork
from ._events import log_fields
from ._reaper import reaper
from ._record_keys import INVALIDATED

if TYPE_CHECKING:
    from sqlalchemy.pool import ConnectionPoolEntry

#: What the reaper logs about a connection given back without release().
COLLECTED = (
    "Alias %r: a connection was never given back: its borrower (a "
    "thread that ended without closing it?) was garbage-collected; "
    "the connection was closed and its pool slot freed"
)
ENDED_CLOSED = (
    "Alias %r: thread %r ended without closing its connection, leaving a "
    "transaction, an error or a cursor behind; the connection was closed and "
    "its pool slot freed"
)
ENDED_REUSED = (
    "Alias %r: thread %r ended without closing its connection; it went back to the pool"
)


def close_abandoned(
    record: ConnectionPoolEntry, alias: str, pid: int, ended: str | None = None
) -> None:
    """Free the slot of a connection nobody reset; the reaper closes it.

    ``ended``: the name of the thread that ended holding it (else its borrower
    was garbage-collected). ``pid``: the process of the pool it came from.
    """
    connection = record.dbapi_connection
    if connection is None:  # invalidated: closed already
        return
    if sys.is_finalizing():
        # The interpreter is exiting: no reaper runs any more. Left on its
        # record, the connection says goodbye as it is freed.
        return
    entry: Any = record  # dbapi_connection is writable on SQLAlchemy's record
    entry.dbapi_connection = None
    if record.record_info is not None:
        record.record_info[INVALIDATED] = True
    if _fork.inherited(pid):
        _fork.keep_forever(connection)
        return
    extra = log_fields("connection_abandoned", alias)
    if ended is None:
        reaper.close_later(connection, COLLECTED, alias, extra=extra)
    else:
        reaper.close_later(connection, ENDED_CLOSED, alias, ended, extra=extra)
