"""Faults: the primary moves, the server restarts under an idle pool.

Two private servers (tests/support/failover.py) stand for an old and a new
primary; the app reaches them through our TCP proxy, as through a cluster
endpoint, a VIP or a DNS name. A switchover points the proxy's new
connections at the second server and makes the first read-only, as a
Patroni switchover keeping the old primary as a replica, or a DBA setting
``read_only``, does: pooled connections still reach the old server, and a
``SELECT 1`` there succeeds, so only the refused write shows it.

Also here: a restart while the pool is idle (pool-wide invalidation, and
pre_ping's default, which pings only connections idle 0.5 s or more), the
statements a busy pool sends (no ping), and libpq's multi-host HOST with
``target_session_attrs=read-write``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import Error as DatabaseError

import django_sapool
from django_sapool.config import IDLE_PING_DEFAULT
from tests import settings as test_settings
from tests.support.failover import (
    THREADS,
    WRITE,
    StatementCounter,
    admin_settings,
    app_settings,
    rows_on,
    server_port,
    set_read_only,
    start_app_server,
    switchover_under_load,
    write,
)
from tests.support.figures import figures
from tests.support.pool_alias import PoolAliasFactory
from tests.support.private_server import PrivateServer
from tests.support.server import Observer, backend_id
from tests.support.tcp_proxy import tcp_proxy
from tests.support.waiting import run_threads

# direct_server: the private servers are reached directly, never through PgBouncer.
pytestmark = [
    pytest.mark.faults,
    pytest.mark.direct_server(reason="private servers behind a proxy"),
    pytest.mark.usefixtures("only_private_servers"),
]


@pytest.fixture(scope="module")
def servers(django_db_blocker: Any) -> Iterator[tuple[PrivateServer, PrivateServer]]:
    with django_db_blocker.unblock():
        first = start_app_server()
        try:
            second = start_app_server()
        except BaseException:
            first.close()
            raise
        try:
            yield first, second
        finally:
            first.close()
            second.close()


@pytest.fixture(autouse=True)
def _writable(request: pytest.FixtureRequest) -> Iterator[None]:
    """Each test starts, and leaves, both servers taking writes."""
    yield
    if "servers" in request.fixturenames:
        for server in request.getfixturevalue("servers"):
            set_read_only(server, False)


# Switchover -------------------------------------------------------------


def test_switchover_to_a_new_primary_under_load(
    pool_alias: PoolAliasFactory, servers: tuple[PrivateServer, PrivateServer]
) -> None:
    """6 threads write; the endpoint moves to the second server, the first
    turns read-only: only requests in flight fail, none a second later."""
    old, new = servers
    with tcp_proxy("127.0.0.1", old.port) as proxy:
        outcomes, switched, stats = switchover_under_load(pool_alias, proxy, old, new)
    requests = [o.request for o in outcomes]
    on_old, on_new = rows_on(old, requests), rows_on(new, requests)
    acknowledged = [o for o in outcomes if o.ok]
    failed = [o for o in outcomes if not o.ok]
    late = [o for o in outcomes if o.started > switched + 1.0]
    figures(
        f"switchover to a new primary ({test_settings.DRIVER})",
        attempted=len(outcomes),
        succeeded=len(acknowledged),
        failed=len(failed),
        failed_later_than_1s=sum(not o.ok for o in late),
        last_failure_after_switch_s=round(
            max((o.started - switched for o in failed), default=0.0), 3
        ),
        rows_on_old=len(on_old),
        rows_on_new=len(on_new),
        rows_on_new_after_1s=sum(o.request in on_new for o in late),
        connections_opened=stats["connections_num"],
    )
    # Each connection in flight at the switch fails one request at most.
    assert 0 < len(failed) <= THREADS
    assert not [o for o in late if not o.ok]
    # Every acknowledged row is on one server, and later ones on the new.
    assert all(o.request in on_old | on_new for o in acknowledged)
    assert not on_old & on_new
    assert late
    assert all(o.request in on_new for o in late)
    # A refused write committed nothing anywhere.
    assert not {o.request for o in failed} & (on_old | on_new)


def test_a_read_only_transaction_of_its_own_keeps_the_pool(
    pool_alias: PoolAliasFactory, servers: tuple[PrivateServer, PrivateServer]
) -> None:
    """A write refused because the session asked for a read-only transaction
    says nothing about the server: its connections stay pooled."""
    server = servers[0]
    alias = pool_alias(pool_size=2, pre_ping=False, settings=app_settings(server))
    wrapper = alias.wrapper()
    before = backend_id(wrapper)
    wrapper.close()
    wrapper.set_autocommit(False)
    cursor = wrapper.cursor()
    cursor.execute("SET TRANSACTION READ ONLY")
    with pytest.raises(DatabaseError) as refused:
        cursor.execute(WRITE, ["read-only of its own"])
    cursor.close()
    wrapper.rollback()
    wrapper.set_autocommit(True)
    wrapper.close()
    cause = refused.value.__cause__
    assert cause is not None
    code = getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)
    assert (code or cause.args[0]) in {"25006", 1792}
    assert backend_id(wrapper) == before  # the same session: nothing discarded
    wrapper.close()


def test_after_a_refused_write_no_older_connection_is_lent_again(
    pool_alias: PoolAliasFactory, servers: tuple[PrivateServer, PrivateServer]
) -> None:
    """After one refused write, no other pooled connection is lent again."""
    server = servers[0]
    alias = pool_alias(pool_size=4, pre_ping=False, settings=app_settings(server))
    wrappers = [alias.wrapper() for _ in range(4)]
    warm = {backend_id(w) for w in wrappers}
    for w in wrappers:
        w.close()
    set_read_only(server, True)
    wrapper = alias.wrapper()
    with pytest.raises(DatabaseError):
        write(wrapper, "refused")
    after = {backend_id(w) for w in wrappers}  # four checkouts at once
    for w in wrappers:
        w.close()
    figures(
        f"read-only server, 4 pooled connections ({test_settings.DRIVER})",
        failed_requests=1,
        old_sessions_lent_again=len(after & warm),
    )
    assert not after & warm
    observer = Observer(**admin_settings(server))
    try:
        # Closed, not just set aside. A session the client closed ends once
        # its server process has seen the close and exited: moments later on
        # a busy machine.
        observer.wait_gone(warm)
    finally:
        observer.close()


# Restart while idle -------------------------------------------------------


@pytest.mark.parametrize(
    "pre_ping", [False, None], ids=["pre_ping=False", "default pre_ping"]
)
def test_restart_while_idle_costs_at_most_one_request(
    pool_alias: PoolAliasFactory,
    servers: tuple[PrivateServer, PrivateServer],
    pre_ping: bool | None,
) -> None:
    """4 warm connections, the server restarts while the app is idle, then
    sequential requests: without pre_ping one fails (pool-wide invalidation,
    not one per stale connection); with the default, none."""
    server = servers[1]
    pool: dict[str, Any] = {} if pre_ping is None else {"pre_ping": pre_ping}
    alias = pool_alias(pool_size=4, settings=app_settings(server), **pool)
    wrappers = [alias.wrapper() for _ in range(4)]
    warm = {backend_id(w) for w in wrappers}
    for w in wrappers:
        w.close()
    # The app idles (pre_ping's default), then the server restarts.
    idle_from = time.monotonic()
    time.sleep(IDLE_PING_DEFAULT)
    restart_started = time.monotonic()
    server.stop()
    server.start()
    restart_s = time.monotonic() - restart_started
    idle_s = time.monotonic() - idle_from
    wrapper = alias.wrapper()
    outcomes = []
    for number in range(8):
        try:
            write(wrapper, f"after-restart-{uuid.uuid4().hex[:8]}-{number}")
            outcomes.append(200)
        except DatabaseError:
            outcomes.append(500)
    stats = django_sapool.get_stats(alias.name)
    figures(
        f"restart while idle, {len(warm)} warm connections, "
        f"{'default pre_ping' if pre_ping is None else 'pre_ping=False'} "
        f"({test_settings.DRIVER})",
        responses=" ".join(map(str, outcomes)),
        restart_s=round(restart_s, 2),
        idle_s=round(idle_s, 2),
        connections_opened_after=stats["connections_num"] - len(warm),
    )
    assert idle_s >= IDLE_PING_DEFAULT
    if pre_ping is None:
        assert outcomes == [200] * 8
    else:
        assert outcomes == [500] + [200] * 7


# A busy pool sends no ping --------------------------------------------------


def test_a_busy_pool_sends_no_ping_by_default(
    pool_alias: PoolAliasFactory, servers: tuple[PrivateServer, PrivateServer]
) -> None:
    """Default configuration: 3 statements per request on the server, no
    more, while connections come back quickly; one ping after an idle spell."""
    counter = StatementCounter(servers[1])
    try:
        _count_statements(pool_alias, servers[1], counter)
    finally:
        counter.close()


def _count_statements(
    pool_alias: PoolAliasFactory, server: PrivateServer, counter: StatementCounter
) -> None:
    alias = pool_alias(pool_size=4, settings=app_settings(server))
    threads, per_thread = 4, 50
    wrappers = [alias.wrapper() for _ in range(threads)]
    for w in wrappers:  # warm: four connections, set up
        backend_id(w)
    for w in wrappers:
        w.close()

    def request(wrapper: Any) -> None:
        try:
            with wrapper.cursor() as cursor:
                for number in (1, 2, 3):
                    cursor.execute(f"SELECT {number}")
                    cursor.fetchall()
        finally:
            wrapper.close()

    def requests() -> None:
        wrapper = alias.wrapper()  # each thread has its own, as in Django
        for _ in range(per_thread):
            request(wrapper)

    mark = counter.mark()
    assert run_threads([requests] * threads) == []
    statements = counter.since(mark)
    time.sleep(IDLE_PING_DEFAULT + 0.1)
    mark = counter.mark()
    request(wrappers[0])
    after_idle = counter.since(mark)
    figures(
        f"statements per request, default pre_ping ({test_settings.DRIVER})",
        busy_requests=threads * per_thread,
        statements_per_request=f"{statements / (threads * per_thread):.2f}",
        statements_after_idle_spell=after_idle,
    )
    assert statements == 3 * threads * per_thread
    assert after_idle == 3 + 1  # the ping


# libpq multi-host -----------------------------------------------------------


@pytest.mark.postgresql
def test_multi_host_with_target_session_attrs_follows_the_primary(
    pool_alias: PoolAliasFactory, servers: tuple[PrivateServer, PrivateServer]
) -> None:
    """HOST lists both servers; libpq connects to the one taking writes. When
    they swap roles, one request fails and the pool reconnects to the other."""
    first, second = servers
    set_read_only(first, True)
    settings = app_settings(
        first, HOST="127.0.0.1,127.0.0.1", PORT=f"{first.port},{second.port}"
    )
    alias = pool_alias(
        pool_size=3, pre_ping=False, settings=settings,
        options={"target_session_attrs": "read-write"},
    )  # fmt: skip
    wrappers = [alias.wrapper() for _ in range(3)]
    before = {server_port(w) for w in wrappers}
    for w in wrappers:
        w.close()
    set_read_only(second, True)  # the roles swap
    set_read_only(first, False)
    wrapper = alias.wrapper()
    outcomes, requests = [], []
    for number in range(6):
        request = f"multi-host-{uuid.uuid4().hex[:8]}-{number}"
        try:
            write(wrapper, request)
            outcomes.append(200)
            requests.append(request)
        except DatabaseError:
            outcomes.append(500)
    after = {server_port(w) for w in wrappers}
    for w in wrappers:
        w.close()
    figures(
        f"multi-host HOST, target_session_attrs=read-write ({test_settings.DRIVER})",
        responses=" ".join(map(str, outcomes)),
        before_on=["first" if p == first.port else "second" for p in before],
        after_on=["first" if p == first.port else "second" for p in after],
    )
    assert before == {second.port}
    assert outcomes == [500] + [200] * 5
    assert after == {first.port}
    assert rows_on(first, requests) == set(requests)
