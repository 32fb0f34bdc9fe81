"""Faults: the password changes while the application runs.

A rotated password (a secrets manager, Vault) or a token minted per connect
(RDS IAM, Azure AD) is not part of what a connection *is*: it must not split
the alias's pool, new physical connections must use the current credential,
and sessions already open keep working.

The application logs in as an account of its own with password
authentication: on MariaDB, a user of the local server (CREATE USER ...
IDENTIFIED BY); on PostgreSQL, whose local test server trusts every login, a
private cluster (tests/support/private_server.py) whose TCP logins need
scram-sha-256. The server is told each new password (ALTER USER / ALTER ROLE),
so a connection opened with a stale one is refused: a request that succeeds
proves the credential it connected with was the current one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
from django.db import connections
from django.db.utils import load_backend

import django_sapool
from tests.support.credentials import (
    FIRST_PASSWORD,
    USER,
    Account,
    StandInTokens,
    Traffic,
    pools_of,
    scram_logins,
    served_across_rotations,
    sessions_since,
)
from tests.support.figures import figures
from tests.support.fixtures import private_server_or_skip
from tests.support.pool_alias import PoolAliasFactory
from tests.support.private_server import PrivatePostgres
from tests.support.server import VENDOR, Observer, Peak, backend_id, server_login
from tests.support.waiting import threads_running, wait_until

pytestmark = [
    pytest.mark.faults,
    pytest.mark.django_db(transaction=True),
    pytest.mark.direct_server(
        reason="counts the server sessions of a login of its own, by user name"
    ),
]


@pytest.fixture(scope="module")
def _private_postgres(django_db_blocker: Any) -> Iterator[PrivatePostgres | None]:
    """PostgreSQL: a private cluster whose TCP logins (but the admin's) use scram."""
    if VENDOR != "postgresql":
        yield None
        return
    private = private_server_or_skip()
    assert isinstance(private, PrivatePostgres)
    try:
        with django_db_blocker.unblock():
            scram_logins(private)
        yield private
    finally:
        private.close()


@pytest.fixture
def account(
    _private_postgres: PrivatePostgres | None, django_db_blocker: Any
) -> Iterator[Account]:
    if _private_postgres is not None:
        with django_db_blocker.unblock():
            admin = Observer(**_private_postgres.settings)
            settings = {**_private_postgres.settings, "USER": USER}
            login = Account({**settings, "PASSWORD": FIRST_PASSWORD}, admin)
            login.set_password(FIRST_PASSWORD)
            wait_until(lambda: login.refuses("wrong"), "scram logins after reload")
            try:
                yield login
            finally:
                admin.close()
        return
    admin = Observer()
    try:
        with server_login(admin, USER, FIRST_PASSWORD, drop=True) as credentials:
            base = admin.wrapper.settings_dict
            settings = {key: base[key] for key in ("HOST", "PORT", "NAME")}
            login = Account({**settings, **credentials}, admin)
            assert login.refuses("wrong")
            yield login
    finally:
        admin.close()


# Scenario 1: PASSWORD rotated under traffic -------------------------------


def test_password_rotated_under_traffic(
    pool_alias: PoolAliasFactory, account: Account
) -> None:
    """10 rotations while 3 threads send requests: one pool, one pool's worth
    of sessions, and no request fails once a rotation is complete."""
    pool_size, max_overflow, rotations = 2, 1, 10
    # recycle: connections opened before a rotation keep serving for a while
    # after it, then are replaced by connections opened with the new password.
    alias = pool_alias(
        pool_size=pool_size, max_overflow=max_overflow, recycle=1.0, timeout=10,
        settings=account.settings,
    )  # fmt: skip
    shared = alias.settings_dict  # what every thread's wrapper reads, as Django's
    traffic = Traffic()
    windows: list[tuple[float, float]] = []  # each rotation, from ALTER to settings
    opened_after: list[int] = []
    most = pool_size + max_overflow
    peak = Peak()
    try:
        with (
            peak.watching(
                lambda observer: len(account.sessions(observer)),
                settings=account.admin_settings,
            ),
            threads_running([traffic.requests(alias) for _ in range(3)]) as errors,
        ):
            wait_until(
                lambda: len(traffic.served) > 20,
                lambda: f"requests before rotating; failed: {traffic.failed[:1]}",
            )
            for number in range(1, rotations + 1):
                password = f"rotation-{number}-{time.monotonic_ns()}"
                began = time.monotonic()
                account.set_password(password)
                shared["PASSWORD"] = password  # the deployment's new secret
                done = time.monotonic()
                windows.append((began, done))
                known = {session for _, session in traffic.served}
                # New sessions can only have logged in with the new password.
                fresh = wait_until(
                    partial(sessions_since, traffic, done, known),
                    f"a connection opened after rotation {number}",
                    timeout=10,
                )
                opened_after.append(len(fresh))
                time.sleep(0.2)  # traffic on this password for a while
            traffic.stop.set()
        assert errors == []
        sessions_after = account.sessions()
        stats = django_sapool.get_stats(alias.name)
    finally:
        traffic.stop.set()

    def during_rotation(began: float, ended: float) -> bool:
        return any(began <= done and ended >= start for start, done in windows)

    late = [f for f in traffic.failed if not during_rotation(f[0], f[1])]
    survivors = served_across_rotations(traffic.served, windows)
    figures(
        f"password rotated {rotations} times under traffic ({VENDOR})",
        requests=len(traffic.served) + len(traffic.failed),
        failed=len(traffic.failed),
        failed_after_rotation=len(late),
        sessions_opened=len({s for _, s in traffic.served}),
        sessions_kept_across_a_rotation=survivors,
        peak_sessions=peak.most,
        sessions_after=len(sessions_after),
        pools=pools_of(alias),
        connections_num=stats["connections_num"],
    )
    assert late == [], late
    assert len(sessions_after) <= most, sessions_after
    assert pools_of(alias) == 1
    assert all(opened_after), opened_after
    assert survivors > 0, "sessions opened with an old password kept working"
    assert stats["pool_size"] <= most
    # The watcher polls every 5 ms: a session replaced by recycling may show
    # for a moment beside its successor (the server ends it asynchronously).
    assert peak.most <= most + 1, peak.most


# Scenario 2: a token minted per physical connect -------------------------


class TokenAuthMixin:
    """The recipe of docs/credentials.md: a token per *physical* connect.

    ``sapool_connect_params()`` runs only when the pool opens a connection
    (never per checkout), and its result is not part of the pool's key: one
    pool, whatever the token. A token is reused for ``token_ttl`` seconds.
    """

    token_ttl: float = 600.0
    _tokens: dict[tuple[str, str, str], tuple[float, str]]
    _tokens_lock = threading.Lock()

    def sapool_connect_params(self, conn_params: dict[str, Any]) -> dict[str, Any]:
        params: dict[str, Any] = super().sapool_connect_params(conn_params)  # type: ignore[misc]
        return {**params, "password": self.current_token(params)}

    def current_token(self, params: dict[str, Any]) -> str:
        key = (str(params["host"]), str(params.get("port")), str(params["user"]))
        with self._tokens_lock:
            cached = self._tokens.get(key)
            now = time.monotonic()
            if cached is None or now >= cached[0]:
                cached = self._tokens[key] = (
                    now + self.token_ttl,
                    self.mint_token(params),
                )
            return cached[1]

    def mint_token(self, params: dict[str, Any]) -> str:
        raise NotImplementedError  # boto3's generate_db_auth_token() in the recipe


def token_wrapper_class(tokens: StandInTokens, ttl: float) -> type:
    """Our backend's DatabaseWrapper with the recipe, minting from ``tokens``."""
    backend = load_backend(connections["default"].settings_dict["ENGINE"])

    class DatabaseWrapper(TokenAuthMixin, backend.DatabaseWrapper):  # type: ignore[name-defined,misc]
        token_ttl = ttl
        _tokens: dict[tuple[str, str, str], tuple[float, str]] = {}

        def mint_token(self, params: dict[str, Any]) -> str:
            return tokens.mint()

        def sapool_open_connection(self, conn_params: dict[str, Any]) -> Any:
            with tokens.connecting:  # the stand-in's limit, see StandInTokens
                return super().sapool_open_connection(conn_params)

    return DatabaseWrapper


@pytest.mark.parametrize("ttl", [0.0, 600.0], ids=["token-per-connect", "cached-token"])
def test_token_per_connect_backend(
    pool_alias: PoolAliasFactory, account: Account, ttl: float
) -> None:
    """3 threads, 120 request cycles each, on a backend that puts a token into
    every physical connect: connections opened never exceed the pool's size,
    and a token is minted per connection opened (or once, cached), never per
    checkout."""
    pool_size, cycles = 3, 120
    alias = pool_alias(
        pool_size=pool_size, max_overflow=2, pre_ping=True, settings=account.settings
    )
    tokens = StandInTokens(account)
    cls = token_wrapper_class(tokens, ttl)
    seen: set[int] = set()
    checkouts = 0
    lock = threading.Lock()

    def requests() -> None:
        nonlocal checkouts
        wrapper = alias.wrapper(cls)
        for _ in range(cycles):
            session = backend_id(wrapper)
            wrapper.close()
            with lock:
                seen.add(session)
                checkouts += 1

    with threads_running([requests] * 3) as errors:
        pass
    assert errors == []
    stats = django_sapool.get_stats(alias.name)
    # Killing the sessions forces new connections: each must log in again.
    for session in account.sessions():
        account.admin.kill(session)
    again = alias.wrapper(cls)
    reopened = backend_id(again)
    again.close()
    opened = len(seen | {reopened})
    figures(
        f"token per connect, ttl {ttl:g} s ({VENDOR})",
        request_cycles=checkouts,
        connections_opened=opened,
        tokens_minted=len(tokens.minted),
        pools=pools_of(alias),
    )
    assert checkouts == 3 * cycles
    assert len(seen) <= pool_size, seen
    assert stats["connections_num"] == len(seen)
    assert pools_of(alias) == 1
    assert reopened not in seen
    if ttl:
        assert len(tokens.minted) == 1  # reused while valid, and still accepted
    else:
        assert len(tokens.minted) == opened


def test_token_in_get_connection_params_keeps_one_pool(
    pool_alias: PoolAliasFactory, account: Account
) -> None:
    """django-iam-dbauth's shape: a fresh token at every get_connection_params()
    call, which Django makes at every checkout: still one pool, and
    connections opened never exceed its size."""
    pool_size, cycles = 3, 120
    alias = pool_alias(pool_size=pool_size, max_overflow=2, settings=account.settings)
    backend = load_backend(connections["default"].settings_dict["ENGINE"])
    tokens = StandInTokens(account)

    class DatabaseWrapper(backend.DatabaseWrapper):  # type: ignore[name-defined,misc]
        def get_connection_params(self) -> dict[str, Any]:
            params: dict[str, Any] = super().get_connection_params()
            params["password"] = tokens.mint()
            return params

        def connect(self) -> None:
            # The stand-in's limit (see StandInTokens): no other mint between
            # this checkout's and the connect it may make.
            with tokens.connecting:
                super().connect()

    seen: set[int] = set()
    lock = threading.Lock()

    def requests() -> None:
        wrapper = alias.wrapper(DatabaseWrapper)
        for _ in range(cycles):
            session = backend_id(wrapper)
            wrapper.close()
            with lock:
                seen.add(session)

    with threads_running([requests] * 3) as errors:
        pass
    assert errors == []
    figures(
        f"token in get_connection_params ({VENDOR})",
        request_cycles=3 * cycles,
        tokens_minted=len(tokens.minted),
        connections_opened=len(seen),
        pools=pools_of(alias),
    )
    assert len(tokens.minted) >= 3 * cycles  # Django asked at every checkout
    assert len(seen) <= pool_size, seen
    assert pools_of(alias) == 1
