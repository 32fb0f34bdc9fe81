"""Does every process's pool fit the server's connection limit?

Each process has its own pool per alias, and Django gives each thread its own
connection per alias, so one process uses at most
``min(threads, pool_size + max_overflow)`` server connections per alias, or
``threads`` with ``max_overflow=-1`` (no pool limit). Aliases on the same
server share its ``max_connections``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, connections

from .checks import pooled_aliases
from .config import PoolConfig


class BudgetError(Exception):
    """The budget cannot be worked out: an alias's settings or its server."""


@dataclass(frozen=True)
class AliasNeed:
    """What one alias may hold at once across all processes."""

    alias: str
    server: str
    #: Most connections one process's pool opens; -1: no limit.
    pool_max: int
    per_process: int
    needed: int


@dataclass
class ServerBudget:
    """One server's limit and what the aliases on it may need."""

    server: str
    max_connections: int
    reserved: int
    in_use: int
    aliases: list[AliasNeed] = field(default_factory=list)

    @property
    def usable(self) -> int:
        return self.max_connections - self.reserved

    @property
    def needed(self) -> int:
        return sum(need.needed for need in self.aliases)

    @property
    def fits(self) -> bool:
        return self.needed <= self.usable


def server_name(alias: str) -> str:
    """vendor host:port of an alias, for grouping; no credentials."""
    settings_dict = connections.settings[alias]
    host = settings_dict.get("HOST") or "localhost"
    port = settings_dict.get("PORT") or "default port"
    return f"{connections[alias].vendor} {host}:{port}"


def server_limits(alias: str) -> tuple[int, int, int]:
    """(max_connections, reserved for superusers, client sessions now)."""
    connection = connections[alias]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT current_setting('max_connections')::int, "
                "current_setting('superuser_reserved_connections')::int, "
                "(SELECT count(*) FROM pg_stat_activity "
                "WHERE backend_type = 'client backend')"
            )
            row: Any = cursor.fetchone()
            return int(row[0]), int(row[1]), int(row[2])
        # Not information_schema.GLOBAL_STATUS: MySQL 8.0 removed it and 5.7
        # refuses it by default; SHOW GLOBAL STATUS works on every version.
        cursor.execute("SELECT @@max_connections")
        (max_connections,) = cursor.fetchone()
        cursor.execute("SHOW GLOBAL STATUS LIKE 'Threads_connected'")
        _, connected = cursor.fetchone()
    # MySQL/MariaDB keep one extra connection for SUPER beyond the limit.
    return int(max_connections), 0, int(connected)


def per_process(config: PoolConfig, threads: int) -> int:
    """Most connections one process needs: a thread holds one at a time."""
    limit = config.pool_max
    return threads if limit == -1 else min(threads, limit)


def budget(
    workers: int, threads: int, aliases: list[str] | None = None
) -> list[ServerBudget]:
    """Per server: the limit, and each pooled alias's worst case."""
    servers: dict[str, ServerBudget] = {}
    for alias in aliases or pooled_aliases():
        if alias not in connections.settings:
            raise BudgetError(
                f"unknown database alias {alias!r}; DATABASES has "
                f"{', '.join(repr(name) for name in connections.settings)}"
            )
        try:
            config = PoolConfig.from_settings(alias, connections.settings[alias])
        except ImproperlyConfigured as exc:
            raise BudgetError(_one_line(exc)) from exc
        need = per_process(config, threads)
        name = server_name(alias)
        if name not in servers:
            try:
                limits = server_limits(alias)
            except DatabaseError as exc:
                raise BudgetError(
                    f"cannot reach the server of database alias {alias!r} "
                    f"({name}): {_one_line(exc)}"
                ) from exc
            servers[name] = ServerBudget(name, *limits)
        servers[name].aliases.append(
            AliasNeed(alias, name, config.pool_max, need, need * workers)
        )
    return list(servers.values())


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
