"""The structured fields of the log lines an operator acts on.

Each such line of the ``django_sapool`` logger carries, as ``LogRecord``
attributes (``logging``'s ``extra=``), ``sapool_event``: a stable name from
EVENTS, ``sapool_alias``: the database alias, and per event a few more
``sapool_*`` fields (never a password or a connect string). JSON formatters
emit them as keys; docs/observability.md lists them with their levels.
"""

from __future__ import annotations

from typing import Any

#: Every event name, with its level. Stable: dashboards and alerts match them.
EVENTS = {
    "pool_exhausted": "WARNING",
    "connection_discarded": "WARNING",
    "connection_leaked": "WARNING",
    "connection_abandoned": "WARNING",
    "connect_failing": "WARNING",
    "connect_recovered": "INFO",
    "failover_detected": "WARNING",
    "credentials_refreshed": "INFO",
    "pool_created": "INFO",
    "pool_disposed": "INFO",
    "pool_replaced": "INFO",
    "fork_detected": "INFO",
}


def log_fields(name: str, alias: str, **fields: Any) -> dict[str, Any]:
    """The ``extra=`` of one event's log call: ``sapool_<field>`` attributes."""
    assert name in EVENTS, name
    extra = {"sapool_event": name, "sapool_alias": alias}
    for key, value in fields.items():
        extra["sapool_" + key] = value
    return extra
