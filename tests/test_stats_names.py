"""get_stats() speaks psycopg_pool's language: its keys, with its meanings."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from django.db import connections

import django_sapool
from django_sapool._events import EVENTS
from django_sapool.stats import COUNTERS, DESCRIPTIONS, GAUGES, PSYCOPG_KEYS
from tests.support.pool_alias import PoolAliasFactory
from tests.support.server import Observer, backend_id

pytestmark = pytest.mark.django_db(transaction=True)

#: psycopg_pool 3.2's get_stats() keys, but usage_ms: psycopg_pool counts it
#: only in its connection() context manager, which Django's pool never uses.
PSYCOPG_POOL_STATS = {
    "pool_min",
    "pool_max",
    "pool_size",
    "pool_available",
    "requests_waiting",
    "requests_num",
    "requests_queued",
    "requests_wait_ms",
    "requests_errors",
    "returns_bad",
    "connections_num",
    "connections_ms",
    "connections_errors",
    "connections_lost",
}


def test_psycopg_pool_keys_and_ours_are_documented() -> None:
    assert PSYCOPG_KEYS == PSYCOPG_POOL_STATS
    assert set(DESCRIPTIONS) == {*GAUGES, *COUNTERS}
    assert len({*GAUGES, *COUNTERS}) == len(GAUGES) + len(COUNTERS)


def test_a_typo_names_the_pooled_aliases() -> None:
    with pytest.raises(ValueError, match="'defualt'") as raised:
        django_sapool.get_stats("defualt")
    assert "'default'" in str(raised.value)
    with pytest.raises(ValueError, match="'defualt'"):
        django_sapool.pop_stats("defualt")


def test_a_configured_alias_reports_its_sizes_before_its_first_checkout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    unused = {
        **connections.settings["default"],
        "OPTIONS": {"sapool": {"pool_size": 3, "max_overflow": 2}},
    }
    monkeypatch.setitem(connections.settings, "unused", unused)
    stats = django_sapool.get_stats("unused")
    assert django_sapool.get_stats()["unused"] == stats
    assert (stats["pool_min"], stats["pool_max"]) == (3, 5)
    assert all(stats[key] == 0 for key in COUNTERS)
    assert stats["pool_size"] == stats["pool_available"] == stats["pool_used"] == 0


@pytest.mark.direct_server(reason="counts connect attempts to the server itself")
def test_failed_connects_count_as_attempts_and_as_request_errors(
    pool_alias: PoolAliasFactory,
) -> None:
    alias = pool_alias(pool_size=1, unreachable_wait=None)
    good = alias.wrapper()
    backend_id(good)  # one successful attempt
    good.close()
    django_sapool.dispose(alias.name)
    bad = pool_alias(pool_size=1, unreachable_wait=None)
    bad.settings_dict["NAME"] = "sapool_no_such_database"
    bad.name = alias.name  # the same alias, now pointing nowhere
    with pytest.raises(Exception, match="sapool_no_such_database"):
        bad.wrapper().ensure_connection()
    stats = django_sapool.get_stats(alias.name)
    assert (stats["connections_num"], stats["connections_errors"]) == (2, 1)
    assert (stats["requests_num"], stats["requests_errors"]) == (2, 1)
    assert stats["requests_timeouts"] == 0


def test_a_connection_broken_after_an_error_is_a_bad_return(
    pool_alias: PoolAliasFactory,
) -> None:
    alias = pool_alias(pool_size=1)
    wrapper = alias.wrapper()
    wrapper.ensure_connection()
    wrapper.errors_occurred = True
    wrapper.connection.close()  # broken: Django's check finds it unusable
    wrapper.close()
    stats = django_sapool.get_stats(alias.name)
    assert stats["returns_bad"] == 1
    assert stats["connections_lost"] == 0
    assert stats["pool_size"] == 0


def test_readme_and_docs_list_every_key_and_event() -> None:
    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    for key in (*GAUGES, *COUNTERS):
        assert f"| `{key}` |" in readme, key
    docs = (root / "docs" / "observability.md").read_text()
    for name, level in EVENTS.items():
        assert f"| `{name}` | {level} |" in docs, name


@pytest.mark.direct_server(reason="kills the server session it identifies")
def test_operator_events_carry_the_alias_and_their_documented_level(
    pool_alias: PoolAliasFactory, observer: Observer, caplog: pytest.LogCaptureFixture
) -> None:
    alias = pool_alias(pool_size=1, max_overflow=0, timeout=0.1, pre_ping=True)
    caplog.set_level(logging.INFO, logger="django_sapool")
    holder = alias.wrapper()
    session = backend_id(holder)
    with pytest.raises(django_sapool.PoolTimeout):
        alias.wrapper().connect()
    holder.close()
    observer.kill(session)  # the pre-ping finds it gone: discarded as lost
    backend_id(holder)
    holder.close()
    events = [
        record
        for record in caplog.records
        if getattr(record, "sapool_alias", None) == alias.name
    ]
    seen = {record.sapool_event: record for record in events}  # type: ignore[attr-defined]
    assert {"pool_created", "pool_exhausted", "connection_discarded"} <= set(seen)
    assert seen["connection_discarded"].sapool_reason == "lost"  # type: ignore[attr-defined]
    for name, record in seen.items():
        assert record.levelname == EVENTS[name], name
    password = alias.settings_dict["PASSWORD"]
    if password:
        for record in events:
            assert password not in str(vars(record)), record
