"""Leak detection, recycle jitter, pre-warming, and per-user pools, on real servers."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest

import django_sapool
from tests.support.pool_alias import PoolAlias, PoolAliasFactory
from tests.support.server import (
    VENDOR,
    Observer,
    backend_id,
    query_value,
)
from tests.support.waiting import run_threads, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def keep_the_connection_forever(wrapper: Any) -> int:
    """Stands for a background loop that never gives its connection back."""
    return backend_id(wrapper)


def leak_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "checked out for" in r.getMessage()
    ]


@pytest.mark.direct_server(
    reason=("the leaked connection is looked up by its server session")
)
def test_a_connection_out_too_long_is_reported_with_its_stack(
    pool_alias: PoolAliasFactory, observer: Observer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="django_sapool")
    alias = pool_alias(pool_size=2, leak_timeout=0.3)
    quick = alias.wrapper()
    backend_id(quick)
    quick.close()  # back well within the limit: never reported
    holder = alias.wrapper()
    session = keep_the_connection_forever(holder)
    wait_until(lambda: leak_warnings(caplog), "a leak warning", interval=0.05)
    time.sleep(0.5)  # the watcher keeps looking: still one warning, not one a look
    (warning,) = leak_warnings(caplog)
    assert repr(alias.name) in warning
    assert "leak_timeout=0.3" in warning
    assert repr(threading.current_thread().name) in warning
    assert "keep_the_connection_forever" in warning  # where it was taken
    # The server still has the session, lent and idle: a leak, not a failure.
    assert observer.alive([session]) == {session}
    holder.close()
    returned = [r for r in caplog.records if "came back after" in r.getMessage()]
    assert len(returned) == 1
    assert returned[0].levelno == logging.INFO


def test_no_warning_without_leak_timeout(
    pool_alias: PoolAliasFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="django_sapool")
    holder = pool_alias(pool_size=1).wrapper()
    backend_id(holder)
    time.sleep(0.5)
    holder.close()
    assert leak_warnings(caplog) == []


def replacement_times(alias: PoolAlias, count: int, seconds: float) -> list[float]:
    """Open ``count`` connections at once; when was each replaced (recycled)?

    Each round checks out all of them together, so each is checked for age
    every round; a server session that is gone has been replaced.
    """
    return sorted(replacements(alias, count, seconds)[0])


def replacements(
    alias: PoolAlias, count: int, seconds: float
) -> tuple[list[float], list[float], float]:
    """replacement_times(), each connection's age when replaced, and their
    resolution: the longest round plus how long opening them all took (a
    loaded machine slows both)."""
    wrappers = [alias.wrapper() for _ in range(count)]
    opened: dict[int, float] = {}
    for wrapper in wrappers:
        opened[backend_id(wrapper)] = time.monotonic()
    for wrapper in wrappers:
        wrapper.close()
    assert len(opened) == count
    started = time.monotonic()
    replaced: dict[int, float] = {}
    longest = 0.0
    while len(replaced) < count and time.monotonic() - started < seconds:
        round_started = time.monotonic()
        now_ids = {backend_id(wrapper) for wrapper in wrappers}
        for wrapper in wrappers:
            wrapper.close()
        now = time.monotonic()
        for session in set(opened) - now_ids - set(replaced):
            replaced[session] = now
        longest = max(longest, now - round_started)
        time.sleep(0.02)
    assert len(replaced) == count, f"only {len(replaced)} of {count} recycled"
    times = [when - started for when in replaced.values()]
    ages = [when - opened[session] for session, when in replaced.items()]
    opening = max(opened.values()) - min(opened.values())
    return times, ages, longest + 0.02 + opening


@pytest.mark.direct_server(reason="tells connections apart by server session")
def test_recycle_jitter_spreads_replacements(pool_alias: PoolAliasFactory) -> None:
    alias = pool_alias(pool_size=6, recycle=2, recycle_jitter=0.75)
    times = replacement_times(alias, 6, seconds=5)
    # Ages shortened by 0 to 1.5 s at random: replaced from 0.5 s to 2 s.
    assert times[0] >= 0.4, times
    assert times[-1] <= 2 + 0.3, times
    assert times[-1] - times[0] >= 0.2, f"all replaced together: {times}"


@pytest.mark.direct_server(reason="tells connections apart by server session")
def test_without_jitter_connections_opened_together_go_together(
    pool_alias: PoolAliasFactory,
) -> None:
    alias = pool_alias(pool_size=6, recycle=1, recycle_jitter=0)
    _, ages, resolution = replacements(alias, 6, seconds=4)
    # Each replaced at its first checkout past 1 s of age: in the same round
    # as those opened with it, a round's length (the resolution) apart at most.
    assert min(ages) >= 0.95, ages
    assert max(ages) - min(ages) < resolution + 0.05, (ages, resolution)


@pytest.mark.direct_server(reason="counts our sessions on the server")
def test_prewarm_opens_connections_at_first_checkout(
    pool_alias: PoolAliasFactory, observer: Observer
) -> None:
    before = observer.sessions_on_database()
    alias = pool_alias(pool_size=4, prewarm=3)
    first = alias.wrapper()
    backend_id(first)
    ours = observer.sessions_on_database() - before - {observer.own_id}
    assert len(ours) == 3
    stats = django_sapool.get_stats(alias.name)
    assert (stats["connections_num"], stats["requests_num"]) == (3, 1)
    # The warmed connections get Django's setup when first lent.
    wrappers = [first, alias.wrapper(), alias.wrapper()]
    assert {backend_id(wrapper) for wrapper in wrappers} == ours
    # Something Django's setup changes from the server's default: the time
    # zone (the cluster's is Etc/UTC), MySQL's isolation (REPEATABLE-READ).
    if VENDOR == "postgresql":
        setting, expected = "SHOW TIME ZONE", "UTC"
    elif first.mysql_is_mariadb:
        setting, expected = "SELECT @@session.tx_isolation", "READ-COMMITTED"
    else:
        setting, expected = "SELECT @@transaction_isolation", "READ-COMMITTED"
    for wrapper in wrappers:
        with wrapper.cursor() as cursor:
            cursor.execute(setting)
            assert cursor.fetchone()[0] == expected
        wrapper.close()
    assert django_sapool.get_stats(alias.name)["connections_num"] == 3


@pytest.mark.direct_server(
    reason=(
        "the login user is the server's; the test PgBouncer logs in as one user"
        " whoever the client says it is"
    )
)
def test_aliases_with_different_users_never_share_a_connection(
    pool_alias: PoolAliasFactory, second_login: dict[str, str]
) -> None:
    default_user = pool_alias(pool_size=2, max_overflow=2)
    second_user = pool_alias(pool_size=2, max_overflow=2, settings=second_login)
    expected = {
        default_user.name: default_user.settings_dict["USER"],
        second_user.name: second_login["USER"],
    }
    current_user = (
        "SELECT current_user"
        if VENDOR == "postgresql"
        else "SELECT SUBSTRING_INDEX(CURRENT_USER(), '@', 1)"
    )
    seen: dict[str, set[int]] = {name: set() for name in expected}
    wrong: list[tuple[str, str]] = []
    lock = threading.Lock()

    def requests() -> None:
        wrappers = [default_user.wrapper(), second_user.wrapper()]
        for _ in range(40):
            for wrapper in wrappers:
                user = query_value(wrapper, current_user)
                session = backend_id(wrapper)
                wrapper.close()
                with lock:
                    seen[wrapper.alias].add(session)
                    if user != expected[wrapper.alias]:
                        wrong.append((wrapper.alias, user))

    assert run_threads([requests] * 8) == []
    assert wrong == []
    assert seen[default_user.name].isdisjoint(seen[second_user.name])
