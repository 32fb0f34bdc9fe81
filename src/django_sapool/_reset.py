"""Reset on return: ready a returned connection for its next borrower.

The usual return sends nothing: every cursor of the loan is closed and the
client library says no transaction is open. Anything else takes a round trip
(roll back, commit, or reset the whole session, as ``reset_on_return`` says),
timed by the watchdog; a connection that cannot be made ready is closed.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._events import log_fields
from ._record_keys import INITIALISED
from ._watchdog import watchdog

if TYPE_CHECKING:
    from ._drivers import Driver

logger = logging.getLogger("django_sapool")

Cursors = list[weakref.ref[Any]] | tuple[()]


class Reset:
    """One pool's reset policy (``reset_on_return``) for its driver."""

    def __init__(
        self,
        alias: str,
        mode: str | None,
        driver: Driver,
        errors: tuple[type[BaseException], ...],
        bounded_call: Callable[[Any, str], int | None],
    ) -> None:
        self.alias = alias
        self.mode = mode
        #: Every return takes a round trip (a full session reset).
        self._discards = mode == "discard"
        self.driver = driver
        #: What a failed reset may raise and still be ours to handle; anything
        #: else (an exception from a signal handler) is the caller's.
        self.errors = errors
        self._bounded_call = bounded_call

    def ready(
        self,
        connection: Any,
        info: dict[str, Any],
        cursors: Cursors = (),
        named_cursors: bool = False,
        rollback_only: bool = False,
    ) -> bool:
        """Ready a returned connection for its next borrower; False if it cannot be.

        ``cursors`` are weak references to the driver cursors made during the
        loan: each still alive is closed first, so none can run on the next
        borrower's session. ``rollback_only``: the borrower abandoned its
        transaction (close() inside atomic()), so it is rolled back even with
        reset "commit".
        """
        if named_cursors or self._discards:
            return self._round_trip(
                connection, info, cursors, named_cursors, rollback_only
            )
        try:
            if not self._close_cursors(cursors):
                return False  # one could still run: better no connection
            if self.driver.in_transaction(connection) is False:
                return True  # the usual case: nothing to send, nothing to time
        except self.errors as exc:
            return self._failed(exc)
        return self._round_trip(connection, info, (), named_cursors, rollback_only)

    def _close_cursors(self, cursors: Cursors) -> bool:
        """Close the loan's cursors still open; False if one could still run.

        Django closes the cursors it makes, so most are closed already and
        cost no call: closing one again would redo the driver's work
        (psycopg 3 resets it once more).
        """
        is_closed = self.driver.cursor_is_closed
        for ref in cursors:
            cursor = ref()
            if cursor is None or is_closed(cursor):
                continue
            # Not contextlib.suppress: a loan may leave many cursors open.
            try:  # noqa: SIM105
                cursor.close()
            except self.errors:
                pass  # checked next
            if not is_closed(cursor):
                return False
        return True

    def _round_trip(
        self,
        connection: Any,
        info: dict[str, Any],
        cursors: Cursors,
        named_cursors: bool,
        rollback_only: bool,
    ) -> bool:
        """ready() when it takes a round trip: timed by the watchdog."""
        mode, driver, bounded_call = self.mode, self.driver, self._bounded_call
        if rollback_only and mode == "commit":
            mode = "rollback"
        call = None
        try:
            if named_cursors and mode != "commit":
                # Closing a server-side cursor is a round trip.
                call = bounded_call(connection, "a reset")
            if not self._close_cursors(cursors):
                return False  # one could still run: better no connection
            in_transaction = driver.in_transaction(connection)
            if in_transaction is False and mode != "discard" and not named_cursors:
                return True
            if mode is None and in_transaction is not False:
                logger.warning(
                    "Alias %r: connection returned inside a transaction (or "
                    "with its state unknown after an error) with "
                    "reset_on_return=None; closing it instead of pooling it",
                    self.alias,
                    extra=log_fields(
                        "connection_discarded",
                        self.alias,
                        reason="returned_in_transaction",
                    ),
                )
                return False
            # A round trip: time it, but never cut a commit short (the client
            # could not tell whether it happened).
            if mode == "discard":  # also closes every cursor (DISCARD ALL)
                call = call or bounded_call(connection, "a reset")
                driver.discard(connection)
                info[INITIALISED] = False
            elif mode is not None:
                if call is None and mode != "commit":
                    call = bounded_call(connection, "a reset")
                driver.end_transaction(connection, commit=mode == "commit")
            if named_cursors and mode != "discard":
                # WITH HOLD cursors outlive the transaction: close what is left.
                call = call or bounded_call(connection, "a reset")
                driver.close_named_cursors(connection)
        except self.errors as exc:
            return self._failed(exc)
        finally:
            cut = call is not None and watchdog.finish(call)
        return not cut  # cut: it succeeded at its deadline, but the socket is shut

    def _failed(self, error: BaseException) -> bool:
        logger.warning(
            "Alias %r: resetting a returned connection failed (%s: %s); closing it",
            self.alias,
            type(error).__name__,
            error,
            extra=log_fields(
                "connection_discarded",
                self.alias,
                reason="reset_failed",
                error=type(error).__name__,
            ),
        )
        return False
