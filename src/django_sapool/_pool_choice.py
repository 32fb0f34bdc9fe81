"""Which pool a wrapper's settings map to, and how a pool is named in logs.

Pools are keyed by everything that decides what a connection is and how it is
set up: the connect parameters, the OPTIONS Django pops before connecting
(assume_role, isolation_level, ours), the time zone it applies. Not the
password: a rotated one, or a token per connect (RDS IAM), is the same server
session to have; new connections use the current one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._pool import DatabasePool

#: Connect parameters (and OPTIONS keys) that authenticate, never identify.
_SECRETS = frozenset({"password", "passwd"})


@dataclass(slots=True)
class PoolChoice:
    """The pool a wrapper used last and the inputs it was chosen for."""

    settings: dict[str, Any]
    conn_params: dict[str, Any]
    pool: DatabasePool

    @classmethod
    def made(
        cls, settings: dict[str, Any], conn_params: dict[str, Any], pool: DatabasePool
    ) -> PoolChoice:
        # Settings may be changed in place later (tests do): keep a copy.
        return cls(_copy(settings), conn_params, pool)


def fingerprint(
    conn_params: Mapping[str, Any], settings: Mapping[str, Any], timezone_name: str
) -> str:
    """A stable digest of what a pool's connections are, without secrets."""
    inputs = (
        _without_secrets(conn_params),
        _without_secrets(settings["OPTIONS"]),
        timezone_name,
        settings.get("CONN_MAX_AGE", 0),
        settings.get("CONN_HEALTH_CHECKS", False),
    )
    return hashlib.sha256(repr(_canonical(inputs)).encode()).hexdigest()[:32]


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


def _without_secrets(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if k not in _SECRETS}


def _canonical(value: object) -> object:
    if isinstance(value, dict):
        return sorted((repr(k), _canonical(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def _copy(value: Any) -> Any:
    """A copy of settings that nothing changed in place can reach (dicts, lists)."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value
