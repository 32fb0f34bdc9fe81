"""A lower bound for any pool behind Django's connect() and close().

``ENGINE = "benchmarks.floor.postgresql"`` (or ``.mysql``) is Django's own
backend whose connections go back to a plain list at ``close()`` and come
from it at the next ``connect()``: no reset, no checks, no thread safety, only
usable by one thread. What it costs over a persistent connection is what
Django's connect and close code costs per request, before any pool's own work
(``benchmarks/cpu.py``). Never a backend to use.
"""

from __future__ import annotations

from typing import Any

#: Idle connections per alias (one process, one thread).
_idle: dict[str, list[Any]] = {}


class ListPoolMixin:
    """Django's connect() and close(), with a list for a pool."""

    alias: str
    connection: Any

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        idle = _idle.setdefault(self.alias, [])
        if idle:
            return idle.pop()
        return super().get_new_connection(conn_params)  # type: ignore[misc]

    def _close(self) -> None:
        if self.connection is not None:
            _idle.setdefault(self.alias, []).append(self.connection)
