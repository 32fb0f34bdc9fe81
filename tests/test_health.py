"""Dead connections are discarded and never handed out again; old ones are recycled."""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.db import Error

from tests.support.pool_alias import PoolAliasFactory
from tests.support.server import Observer, backend_id

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.session_bound(
    reason=(
        "in transaction mode PgBouncer drops the killed server session and runs"
        " the next transaction on another: the client never sees the kill"
    )
)
@pytest.mark.parametrize("end_of_request", [False, True])
def test_killed_connection_fails_once_then_is_replaced(
    pool_alias: PoolAliasFactory, observer: Observer, end_of_request: bool
) -> None:
    alias = pool_alias(pool_size=1, max_overflow=0, pre_ping=False)
    wrapper = alias.wrapper()
    dead = backend_id(wrapper)
    wrapper.close()
    observer.kill(dead)

    with pytest.raises(Error):
        backend_id(wrapper)  # no ping: the stale connection fails once
    if end_of_request:
        wrapper.close_if_unusable_or_obsolete()  # what request_finished does
    else:
        wrapper.close()
    assert wrapper.connection is None

    fresh = backend_id(wrapper)
    assert fresh != dead, "a dead connection is never handed out again"
    assert observer.alive([fresh]) == {fresh}


@pytest.mark.session_bound(
    reason=(
        "in transaction mode the next transaction avoids the killed session "
        "anyway (PgBouncer's doing), so this would pass without a ping"
    )
)
@pytest.mark.parametrize(
    ("pool", "settings"),
    [({"pre_ping": True}, {}), ({}, {"CONN_HEALTH_CHECKS": True})],
    ids=["pre_ping", "CONN_HEALTH_CHECKS"],
)
def test_pre_ping_replaces_a_killed_connection_before_use(
    pool_alias: PoolAliasFactory,
    observer: Observer,
    pool: dict[str, Any],
    settings: dict[str, Any],
) -> None:
    alias = pool_alias(pool_size=1, max_overflow=0, settings=settings, **pool)
    wrapper = alias.wrapper()
    dead = backend_id(wrapper)
    wrapper.close()
    observer.kill(dead)
    fresh = backend_id(wrapper)  # no error reaches the borrower
    assert fresh != dead
    assert observer.alive([fresh]) == {fresh}


@pytest.mark.session_bound(reason="in transaction mode the client never sees the kill")
def test_connection_killed_while_lent_is_discarded_on_return(
    pool_alias: PoolAliasFactory, observer: Observer
) -> None:
    alias = pool_alias(pool_size=2, max_overflow=0)
    wrapper = alias.wrapper()
    dead = backend_id(wrapper)
    observer.kill(dead)
    with pytest.raises(Error):
        backend_id(wrapper)
    wrapper.close()
    seen = set()
    for _ in range(4):
        other = alias.wrapper()
        seen.add(backend_id(other))
        other.close()
    assert dead not in seen


@pytest.mark.direct_server(
    reason=(
        "expects a new server session after recycling and the old one to end; "
        "PgBouncer hands the same one back"
    )
)
def test_recycle_replaces_connections_older_than_its_age(
    pool_alias: PoolAliasFactory, observer: Observer
) -> None:
    alias = pool_alias(pool_size=1, max_overflow=0, recycle=0.5)
    wrapper = alias.wrapper()
    old = backend_id(wrapper)
    wrapper.close()
    assert backend_id(wrapper) == old, "still young: reused"
    wrapper.close()
    time.sleep(0.6)
    new = backend_id(wrapper)
    assert new != old
    observer.wait_gone([old])  # closed, not leaked
