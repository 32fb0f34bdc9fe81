"""Who is told of each pool event that metrics need (OpenTelemetry, Prometheus).

Empty, the usual case, the hooks cost one attribute check per checkout and
per return.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ._pool import DatabasePool


class PoolListener(Protocol):
    """Told of each pool event that metrics need.

    Called in the thread of the event, synchronously: cheap calls only.
    ``failure`` is None, "requests_errors" or "requests_timeouts".
    """

    def checkout_ended(
        self, pool: DatabasePool, waited: float, failure: str | None
    ) -> None: ...

    def connected(self, pool: DatabasePool, seconds: float) -> None: ...

    def returned(self, pool: DatabasePool, used: float) -> None: ...


#: Every pool's listeners, in the order they were added.
registered: tuple[PoolListener, ...] = ()


def add_listener(listener: PoolListener) -> None:
    """From now on, every pool of the process tells ``listener`` (once)."""
    global registered
    if listener not in registered:
        registered = (*registered, listener)


def remove_listener(listener: PoolListener) -> None:
    global registered
    registered = tuple(known for known in registered if known is not listener)
