"""The DatabaseWrapper mixin: Django's connect and close, served by a pool.

Django keeps calling ``connect()`` and ``close()`` as it always does; only the
two ends change. ``get_new_connection()`` checks a connection out of this
process's pool and gives Django the raw driver connection, keeping the pool's
Loan aside. ``_close()`` gives it back, or discards it when it is broken.
Django's per-connection setup runs once per physical connection, not per
checkout, so a pooled request costs no extra round trip.
"""

from __future__ import annotations

import logging
import threading
import weakref
from os import getpid
from types import TracebackType
from typing import Any, ClassVar

from django.core.signals import setting_changed
from django.db import connections
from django.db.backends.base.base import NO_DB_ALIAS
from django.db.utils import DatabaseErrorWrapper
from django.utils.functional import cached_property

from . import _connect_timeout, _exit, _fork, _registry, _threads
from ._creation import PoolDisposingCreationMixin
from ._drivers import Driver
from ._loan import Loan
from ._pool import DatabasePool
from ._pool_choice import PoolChoice, describe, fingerprint
from ._record_keys import INITIALISED
from ._stand_in import ReturnedConnection
from ._watchdog import watchdog
from .config import OPTIONS_KEY, PoolConfig, check_not_django_pool
from .errors import PoolTimeout, ServerUnavailable

__all__ = ["PoolDisposingCreationMixin", "PooledDatabaseWrapperMixin"]

logger = logging.getLogger("django_sapool")


class PooledDatabaseWrapperMixin:
    """Mix in before a Django backend's DatabaseWrapper to pool its connections."""

    #: SQLAlchemy URL naming the dialect: its ping and disconnect detection.
    sapool_dialect_url: ClassVar[str]
    #: The driver's adapter (transaction state, reset, ping), built from a
    #: pool's connect parameters.
    sapool_driver_class: ClassVar[type[Driver]]
    #: Wrapper attributes Django's get_new_connection() sets; every borrower
    #: of a connection gets the values of the wrapper that opened it.
    sapool_carried_attrs: ClassVar[tuple[str, ...]] = ()
    #: What this backend raises for an exhausted pool and a failing server:
    #: subclasses of ours and of the driver's OperationalError, defined once
    #: in the backend's module (so they pickle, e.g. into Celery results).
    sapool_timeout_error: ClassVar[type[PoolTimeout]] = PoolTimeout
    sapool_unavailable_error: ClassVar[type[ServerUnavailable]] = ServerUnavailable

    # Provided by Django's DatabaseWrapper.
    alias: str
    settings_dict: dict[str, Any]
    connection: Any
    Database: Any
    in_atomic_block: bool
    autocommit: bool
    run_commit_hooks_on_set_autocommit_on: bool
    _thread_ident: int
    _thread_sharing_count: int
    closed_in_transaction: bool
    needs_rollback: bool
    errors_occurred: bool
    health_check_enabled: bool
    timezone_name: str
    vendor: str

    #: Whether this class gets its connect parameters from Django's code alone.
    _sapool_stock_params: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._sapool_stock_params = _stock_connection_params(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sapool_loan: Loan | None = None
        self._sapool_pool: DatabasePool | None = None
        # The pool chosen last, and for which inputs (the checkout fast path).
        self._sapool_choice: PoolChoice | None = None
        # The pool whose carried attributes this wrapper has.
        self._sapool_carried_from: DatabasePool | None = None
        # The checked-out connection was set up already: skip the
        # init_connection_state() call connect() makes next, once.
        self._sapool_skip_init = False
        # Driver cursors made during the current loan: closed when the
        # connection goes back, so none can run on the next borrower's session.
        # Weak references without callbacks: the cheapest to make per cursor.
        self._sapool_cursors: list[weakref.ref[Any]] = []
        # A named (server-side) cursor was made during the loan: the reset
        # closes whatever such cursors left open on the server.
        self._sapool_named_cursors = False
        # Its thread gives back its loan when it ends (see _threads).
        self._sapool_watched = False

    # Errors ----------------------------------------------------------------

    @cached_property
    def wrap_database_errors(self) -> DatabaseErrorWrapper:
        # Every query, commit and rollback Django runs passes through it.
        return PoolErrorWrapper(self)

    def sapool_statement_failed(self, error: BaseException) -> None:
        """A driver call failed (only called on errors): tell the pool, which
        makes its older connections stale if the server went away or turned
        read-only."""
        loan, pool = self._sapool_loan, self._sapool_pool
        if loan is not None and pool is not None:
            pool.statement_failed(loan, error)

    # Connect ---------------------------------------------------------------

    #: Django's own pool (5.1+, PostgreSQL): never with a pooled ENGINE. A
    #: class attribute, not Django's property: Django reads it several times
    #: per request, and would build its pool (or complain that psycopg_pool
    #: is missing) before get_connection_params() can say what is wrong.
    pool: ClassVar[None] = None

    def get_connection_params(self) -> dict[str, Any]:
        choice = self._sapool_choice
        if (
            choice is not None
            and choice.settings == self.settings_dict
            and not choice.pool.disposed
            and self._sapool_stock_params
        ):
            # Django's connect() asks at every checkout; the answer depends on
            # the settings alone (a time-zone change disposes the pool), so it
            # is built again only when they change. Django's connect code
            # passes it on unchanged. A backend class that computes it itself
            # (a token per connect, say) is asked every time.
            return choice.conn_params
        if "pool" in self.settings_dict["OPTIONS"]:
            # Before Django's own code, which has its own opinion on it.
            check_not_django_pool(self.alias, self.settings_dict["OPTIONS"])
        params: dict[str, Any] = super().get_connection_params()  # type: ignore[misc]
        params.pop(OPTIONS_KEY, None)
        params.pop("pool", None)  # False; Django removes it itself only on PG 5.1+
        return params

    # Not @async_unsafe: only connect() calls it, and connect() is.
    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        choice = self._sapool_choice
        if (
            choice is None
            or conn_params is not choice.conn_params  # not get_connection_params()'s
            or (pool := choice.pool).disposed
            or pool.pid != getpid()  # _fork.inherited(), inline
        ):
            # Not the usual checkout, whose pool is the one chosen last (found
            # inline: it runs per request).
            if self.alias == NO_DB_ALIAS:
                # Django's short-lived maintenance connection (CREATE/DROP
                # DATABASE); no pool is ever chosen for it.
                return self.sapool_open_connection(conn_params)
            pool = self._sapool_pool_for(conn_params)
        loan = pool.checkout(self, conn_params)
        if self._sapool_carried_from is not pool:  # its first checkout, say
            for name, value in pool.carried.items():
                setattr(self, name, value)
            self._sapool_carried_from = pool
            self._sapool_watch()
        self._sapool_loan = loan
        self._sapool_pool = pool
        self._sapool_skip_init = loan.info[INITIALISED]
        return loan.dbapi_connection

    def _sapool_watch(self) -> None:
        # Once per wrapper (not per checkout: at its first, or after its
        # alias moved to another pool), in the thread Django made it for.
        if not self._sapool_watched and self._thread_ident == threading.get_ident():
            _threads.watch(self)
            self._sapool_watched = True

    def _sapool_thread_ended(self, thread: str) -> None:
        """Give back the loan of this wrapper's thread, which has ended.

        A finaliser calls this (see _threads): nothing here may send or log.
        Not for a wrapper shared with other threads (inc_thread_sharing()),
        which may still use it, nor in a forked child for the parent's loan.
        """
        loan, pool = self._sapool_loan, self._sapool_pool
        if (
            loan is None
            or pool is None
            or _fork.inherited(pool.pid)
            or self._thread_sharing_count  # read without Django's lock
            or self._thread_ident != threading.get_ident()
        ):
            return
        cursors = self._sapool_cursors
        clean = not (self.errors_occurred or self._sapool_named_cursors)
        self._sapool_cursors = []
        self._sapool_named_cursors = False
        self._sapool_loan = self._sapool_pool = None
        self._sapool_skip_init = False
        self.connection = pool.stand_in
        pool.reclaim(loan, cursors, clean, thread)

    def sapool_open_connection(self, conn_params: dict[str, Any]) -> Any:
        """Open a physical connection with Django's own code (the pool's creator)."""
        params = self.sapool_connect_params(conn_params)
        return super().get_new_connection(params)  # type: ignore[misc]

    def sapool_connect_params(self, conn_params: dict[str, Any]) -> dict[str, Any]:
        """What the driver gets: a stalled server must not hang connect() for
        minutes, so a default connect_timeout (per connect, not per checkout)."""
        timeout = _connect_timeout.default_for(self.vendor, conn_params)
        if timeout is None:
            return conn_params
        return {**conn_params, "connect_timeout": timeout}

    def set_autocommit(
        self,
        autocommit: bool,
        force_begin_transaction_with_broken_autocommit: bool = False,
    ) -> None:
        # connect() turns autocommit on after every checkout. A pooled
        # connection usually has it on already, and connect() has just reset
        # what Django's set_autocommit() checks (no atomic block, health
        # checked, connected): there it would only make four calls to set
        # what is set. Commit hooks still pending go through Django's code.
        # A subclass's _set_autocommit() is not called either, as it is not
        # per request on a persistent connection.
        if (
            autocommit
            and self._sapool_skip_init
            and not self.run_commit_hooks_on_set_autocommit_on
            and (pool := self._sapool_pool) is not None
            and pool.driver.autocommit(self.connection)
        ):
            self.autocommit = True
            return
        super().set_autocommit(  # type: ignore[misc]
            autocommit, force_begin_transaction_with_broken_autocommit
        )

    def init_connection_state(self) -> None:
        if self._sapool_skip_init:
            # connect() after a checkout: the physical connection was set up
            # when opened (or after the last "discard" reset). A direct call
            # still runs Django's setup, as it would without a pool.
            self._sapool_skip_init = False
            return
        super().init_connection_state()  # type: ignore[misc]
        if self._sapool_loan is not None:
            self._sapool_loan.info[INITIALISED] = True

    def create_cursor(self, name: str | None = None) -> Any:
        # Every query passes here. A fork made without Python's fork hooks
        # (uWSGI forks from C) shows only by process id: drop the parent's
        # connection, untouched, and open one of our own.
        pool = self._sapool_pool
        if pool is None:
            return super().create_cursor(name)  # type: ignore[misc]
        if pool.pid != getpid():  # _fork.inherited(), inline: per query
            self._sapool_forget_inherited()
            self.ensure_connection()  # type: ignore[attr-defined]
            return self.create_cursor(name)
        cursor = super().create_cursor(name)  # type: ignore[misc]
        cursors = self._sapool_cursors
        cursors.append(_weak_ref(cursor))
        if name or len(cursors) > _PRUNE_CURSORS_AT:
            self._sapool_note_cursors(name)
        return cursor

    def _sapool_note_cursors(self, name: str | None) -> None:
        if name:
            self._sapool_named_cursors = True
        cursors = self._sapool_cursors
        if len(cursors) > _PRUNE_CURSORS_AT:  # a long loan: forget the dead
            cursors[:] = [ref for ref in cursors if ref() is not None]

    def close_if_health_check_failed(self) -> None:
        # Every cursor passes here; without CONN_HEALTH_CHECKS Django's check
        # returns at once, so skip the two calls (the backend's and the base's).
        if self.health_check_enabled:
            super().close_if_health_check_failed()  # type: ignore[misc]

    def is_usable(self) -> bool:
        pool = self._sapool_pool
        if pool is None or self._sapool_loan is None:
            return super().is_usable()  # type: ignore[misc,no-any-return]
        if pool.driver.in_failed_transaction(self.connection):
            # What Django's SELECT 1 would find, without the round trip.
            # Giving it back still keeps it: see _sapool_usable().
            return False
        return self._sapool_usable(pool)

    def _sapool_usable(self, pool: DatabasePool) -> bool:
        """Can the pool reuse this connection? Bounded by ping_timeout."""
        connection, driver = self.connection, pool.driver
        if driver.is_broken(connection):
            return False
        loan = self._sapool_loan
        if loan is not None and pool.is_stale(loan):
            # The server went away or turned read-only since it was opened
            # (see DatabasePool.statement_failed): not worth a round trip.
            return False
        if driver.in_failed_transaction(connection):
            # PostgreSQL refuses every statement until a rollback, so Django's
            # SELECT 1 would condemn a healthy connection: the server answered
            # the statement that failed. The reset on return rolls it back.
            return True
        call = pool.bounded_call(connection, "Django's is_usable() check")
        try:
            usable: bool = super().is_usable()  # type: ignore[misc]
        finally:
            cut = watchdog.finish(call)
        return usable and not cut

    # Close -----------------------------------------------------------------

    def _close(self) -> None:
        loan, pool = self._sapool_loan, self._sapool_pool
        if loan is None or pool is None:
            return super()._close()  # type: ignore[misc,no-any-return]
        if pool.pid != getpid():  # _fork.inherited(), inline
            self._sapool_forget_inherited()
            return None
        # The loan ends here, whatever happens below: an exception raised by a
        # signal handler during the check must not leave it half-returned.
        cursors = self._sapool_cursors
        named = self._sapool_named_cursors
        self._sapool_cursors = []
        self._sapool_named_cursors = False
        self._sapool_loan = self._sapool_pool = None
        self._sapool_skip_init = False
        connection = self.connection
        # The connection belongs to the pool again: leave Django a closed
        # stand-in, as a stock _close() leaves a closed connection (close()
        # drops it, except inside atomic(), where queries must fail until the
        # block ends). release() logs a failed reset: no error reaches Django.
        self.connection = pool.stand_in
        try:
            # Only an error can have broken the connection without the reset
            # noticing (the reset itself fails on a dead one and discards it).
            # Django clears errors_occurred once is_usable() said the
            # connection is fine, so this check runs only if Django has not.
            discard = self.errors_occurred and not self._sapool_check(pool, connection)
        except BaseException:
            pool.release(loan, True)
            raise
        # close() inside atomic(): the block's work is abandoned, as when a
        # stock connection closes, whatever reset_on_return says.
        pool.release(loan, discard, cursors, named, self.in_atomic_block)
        return None

    def _sapool_check(self, pool: DatabasePool, connection: Any) -> bool:
        """_sapool_usable() on a connection the wrapper has already let go."""
        stand_in, self.connection = self.connection, connection
        try:
            return self._sapool_usable(pool)
        finally:
            self.connection = stand_in

    def close_pool(self) -> None:
        """Dispose this alias's pools in this process.

        Django calls this from its test-database code and ``ensure_timezone()``;
        the connection this wrapper holds is closed when it is given back.
        """
        _registry.dispose(self.alias)

    # Pools and fork ----------------------------------------------------------

    def _sapool_pool_for(self, conn_params: dict[str, Any]) -> DatabasePool:
        """The pool for parameters get_new_connection() did not recognise as
        those of the pool chosen last (a backend that computes its own, say)."""
        choice = self._sapool_choice
        if (
            choice is not None
            and conn_params == choice.conn_params
            and self.settings_dict == choice.settings
            and not choice.pool.disposed
            and not _fork.inherited(choice.pool.pid)
        ):
            # Settings Django reads beyond these (TIME_ZONE, USE_TZ) dispose
            # every pool when they change, which disposes choice.pool.
            return choice.pool
        settings_dict = self.settings_dict
        pool = _registry.get_or_create(
            self.alias,
            fingerprint(conn_params, settings_dict, self.timezone_name),
            lambda: self._sapool_create_pool(conn_params),
        )
        self._sapool_choice = PoolChoice.made(settings_dict, conn_params, pool)
        return pool

    def _sapool_create_pool(self, conn_params: dict[str, Any]) -> DatabasePool:
        driver = self.sapool_driver_class(conn_params)
        pool = DatabasePool(
            alias=self.alias,
            config=PoolConfig.from_settings(self.alias, self.settings_dict),
            dialect_url=self.sapool_dialect_url,
            driver=driver,
            timeout_error=self.sapool_timeout_error,
            unavailable_error=self.sapool_unavailable_error,
            driver_error=self.Database.Error,
            description=describe(conn_params),
            probe_limit=_connect_timeout.probe_limit(self.vendor, conn_params),
        )
        pool.stand_in = ReturnedConnection(self.Database, driver)
        _exit.register()
        return pool

    def _sapool_forget_inherited(self) -> None:
        """Drop a connection inherited across fork() without touching its socket."""
        pool = self._sapool_pool
        assert pool is not None
        _fork.keep_forever(
            self.connection,
            self._sapool_loan,
            [ref() for ref in self._sapool_cursors],
        )
        self._sapool_loan = self._sapool_pool = None
        self._sapool_skip_init = False
        self._sapool_cursors = []
        self._sapool_named_cursors = False
        if self.in_atomic_block:
            # The parent's transaction cannot continue here: as after close().
            self.connection = ReturnedConnection(self.Database, pool.driver)
            self.closed_in_transaction = self.needs_rollback = True
        else:
            self.connection = None


class PoolErrorWrapper(DatabaseErrorWrapper):
    """Django's error translation, which also tells the pool what failed.

    No cost without an error: the check for one is the one Django makes.
    """

    wrapper: Any  # set by Django's __init__; not in django-stubs

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            return
        if exc_value is not None:
            self.wrapper.sapool_statement_failed(exc_value)
        super().__exit__(exc_type, exc_value, traceback)


#: weakref.ref, one lookup away (create_cursor() runs per query).
_weak_ref = weakref.ref
#: Cursors a loan keeps track of before dropping those already freed.
_PRUNE_CURSORS_AT = 64


def _stock_connection_params(cls: type) -> bool:
    """Does ``cls`` get its connect parameters from Django's own code (and ours)?"""
    return all(
        klass is PooledDatabaseWrapperMixin
        or klass.__module__.startswith(_DJANGO_BACKENDS)
        for klass in cls.__mro__
        if "get_connection_params" in vars(klass)
    )


_DJANGO_BACKENDS = ("django.db.backends.", "django.contrib.gis.db.backends.")


def _forget_inherited_connections() -> None:
    """After fork, drop what this thread's wrappers hold from the parent."""
    for wrapper in connections.all(initialized_only=True):
        if isinstance(wrapper, PooledDatabaseWrapperMixin) and wrapper._sapool_loan:
            wrapper._sapool_forget_inherited()


def _dispose_on_time_zone_change(*, setting: str, **kwargs: Any) -> None:
    # Pooled connections were set up for the old time zone. Django 5.1+ does
    # this through ensure_timezone() -> close_pool(); 4.2 does not.
    if setting in {"TIME_ZONE", "USE_TZ"}:
        _registry.dispose()


_fork.on_child(_forget_inherited_connections)
setting_changed.connect(_dispose_on_time_zone_change)
