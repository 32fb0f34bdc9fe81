"""One SQLAlchemy QueuePool serving one alias and one set of connect parameters.

The pool never builds a connection itself: its creator calls Django's own
``get_new_connection()`` on the wrapper that is checking out, in that wrapper's
thread, with that checkout's parameters. Nothing is copied from Django and no
wrapper is captured.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import sqlalchemy.exc
from sqlalchemy import create_pool_from_url, event
from sqlalchemy.pool import PoolProxiedConnection, QueuePool

from . import registry
from .config import PoolConfig
from .errors import PoolTimeout

if TYPE_CHECKING:
    from sqlalchemy.pool import ConnectionPoolEntry

    from .reset import Session

logger = logging.getLogger("django_sapool")

#: record.info keys. INITIALISED: Django's per-connection setup has run on this
#: physical connection (cleared by a "discard" reset, which undoes it). RESET:
#: release() has reset the connection, so the checkin hook has nothing to do.
INITIALISED = "django_sapool.initialised"
RESET = "django_sapool.reset"


class Borrower(Protocol):
    """The part of a pooled DatabaseWrapper the pool talks to."""

    alias: str
    sapool_carried_attrs: ClassVar[tuple[str, ...]]

    def sapool_open_connection(self, conn_params: dict[str, Any]) -> Any: ...


class DatabasePool:
    """A QueuePool for one alias and connect-parameter set, owned by one process."""

    def __init__(
        self,
        *,
        alias: str,
        config: PoolConfig,
        dialect_url: str,
        session: Session,
        timeout_error: type[PoolTimeout],
        description: str,
    ) -> None:
        self.alias = alias
        self.config = config
        self.session = session
        self.description = description
        self.pid = os.getpid()
        self.retired = False
        #: Wrapper attributes Django's connect code set while opening the first
        #: connection (PostgreSQL's isolation_level); the same for every
        #: connection of this pool, given to every borrower.
        self.carried: dict[str, Any] = {}
        self._connecting = threading.local()
        # A QueuePool with the driver's real dialect: its ping and its
        # disconnect detection (a bare QueuePool cannot pre-ping).
        pool = create_pool_from_url(
            dialect_url,
            poolclass=QueuePool,
            creator=self._open,
            pool_size=config.pool_size,
            max_overflow=config.max_overflow,
            timeout=config.timeout,
            recycle=config.recycle,
            pre_ping=config.pre_ping,
            # Checkin is ours (see release): SQLAlchemy's rollback is unconditional.
            reset_on_return=None,
            use_lifo=config.use_lifo,
        )
        assert isinstance(pool, QueuePool)
        self._pool = pool
        # Only for connections whose borrower was garbage-collected: release()
        # handles every other return, without the cost of a "reset" event.
        event.listen(self._pool, "checkin", self._on_checkin)
        self._timeout_error = timeout_error
        logger.info("Pool created for alias %r (%s): %s", alias, description, config)

    def __repr__(self) -> str:
        return f"<DatabasePool alias={self.alias!r} {self.description} {self.status()}>"

    def status(self) -> str:
        return self._pool.status()

    def checkout(
        self, borrower: Borrower, conn_params: dict[str, Any]
    ) -> PoolProxiedConnection:
        """Lend a connection; a new one is opened by ``borrower`` if needed."""
        self._connecting.borrower = (borrower, conn_params)
        started = time.monotonic()
        try:
            fairy = self._pool.connect()
        except sqlalchemy.exc.TimeoutError:
            waited = time.monotonic() - started
            raise self._exhausted(waited) from None
        finally:
            self._connecting.borrower = None
        registry.lent_connections.add(fairy)
        return fairy

    def release(self, fairy: PoolProxiedConnection, *, discard: bool) -> None:
        """Take a connection back: reset it for reuse, or close it for good.

        Only for connections lent by this process (the wrapper checks).
        """
        registry.lent_connections.discard(fairy)
        if (
            discard
            or self.retired
            or not self._reset(fairy.dbapi_connection, fairy.info)
        ):
            fairy.invalidate()
            return
        fairy.info[RESET] = True
        fairy.close()

    def retire(self) -> None:
        """Close idle connections; those still lent are closed when returned."""
        self.retired = True
        if self.pid == os.getpid():
            self._pool.dispose()
        logger.info("Pool disposed for alias %r (%s)", self.alias, self.description)

    def _open(self, record: ConnectionPoolEntry) -> Any:
        borrower_and_params = getattr(self._connecting, "borrower", None)
        if borrower_and_params is None:
            raise RuntimeError("django_sapool pools open connections only at checkout")
        borrower, conn_params = borrower_and_params
        connection = borrower.sapool_open_connection(conn_params)
        record.info[INITIALISED] = False
        if not self.carried:
            self.carried = {
                name: getattr(borrower, name) for name in borrower.sapool_carried_attrs
            }
        logger.debug("New connection for alias %r (%s)", self.alias, self.description)
        return connection

    def _reset(self, connection: Any, info: dict[str, Any]) -> bool:
        """Ready a returned connection for its next borrower; False if it cannot be."""
        mode = self.config.reset_on_return
        try:
            if mode == "discard":
                self.session.discard(connection)
                info[INITIALISED] = False
            elif mode is None:
                if self.session.in_transaction(connection) is not False:
                    logger.warning(
                        "Alias %r: connection returned inside a transaction with "
                        "reset_on_return=None; closing it instead of pooling it",
                        self.alias,
                    )
                    return False
            else:
                self.session.end_transaction(connection, commit=mode == "commit")
        except Exception as exc:
            logger.warning(
                "Alias %r: resetting a returned connection failed (%s: %s); closing it",
                self.alias,
                type(exc).__name__,
                exc,
            )
            return False
        return True

    def _on_checkin(self, connection: Any, record: ConnectionPoolEntry) -> None:
        # Not reset by release(): its borrower was garbage-collected holding it
        # (say, a thread that ended without closing). Reset it here or drop it;
        # never in a forked child, where the socket is the parent's.
        if record.info.pop(RESET, False) or connection is None:
            return
        if self.pid == os.getpid() and not self._reset(connection, record.info):
            record.invalidate()

    def _exhausted(self, waited: float) -> PoolTimeout:
        config = self.config
        message = (
            f"No connection available for database alias {self.alias!r} after "
            f"waiting {waited:.2f} s (timeout={config.timeout:g}): "
            f"pool_size={config.pool_size}, max_overflow={config.max_overflow}, "
            f"{self._pool.checkedout()} checked out."
        )
        return self._timeout_error(message)


def describe(conn_params: Mapping[str, Any]) -> str:
    """A loggable summary of connect parameters; never includes the password."""
    parts = []
    for label, keys in (
        ("db", ("dbname", "database", "db")),
        ("user", ("user",)),
        ("host", ("host", "unix_socket")),
        ("port", ("port",)),
    ):
        value = next((conn_params[k] for k in keys if conn_params.get(k)), None)
        if value is not None:
            parts.append(f"{label}={value}")
    return " ".join(parts) or "default connection"
