"""What a wrapper holds once it has given its connection back: it acts closed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._drivers import Driver


class ReturnedConnection:
    """Stands in for a connection given back to the pool: it acts closed.

    As the driver's own closed connection does, so callers catch the same
    errors as with Django's stock backend.
    """

    def __init__(self, database: Any, driver: Driver) -> None:
        self._database = database
        self._driver = driver

    def close(self) -> None:
        """Closing a closed connection does nothing."""

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        return self._driver.closed_connection_cursor(self._database)

    def __getattr__(self, name: str) -> Any:
        raise self._driver.closed_connection_error(self._database)
