"""The fixtures every server test may ask for (a plugin of tests/conftest.py),
and the private server they may start (or skip without).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import IN_CI
from tests.support.pool_alias import PoolAlias, PoolAliasFactory, new_pool_alias
from tests.support.private_server import PrivateServer, start_private_server
from tests.support.server import VENDOR, Observer, server_login
from tests.support.tcp_proxy import TcpProxy, tcp_proxy

# One MySQL user per run (dropped after each test), so that runs sharing a
# server never drop each other's; the PostgreSQL role stays (only revoked).
SECOND_LOGIN_USER = (
    "sapool_other_user" if VENDOR == "postgresql" else f"sapool_oth_{os.getpid()}"
)
#: Distinctive, so that a test can look for it where it must not be.
SECOND_LOGIN_PASSWORD = "Pa55-SAPOOL-SECRET-9b1f"


@pytest.fixture
def pool_alias() -> Iterator[PoolAliasFactory]:
    """``pool_alias(pool_size=2, ...)``: a fresh pooled alias (support.pool_alias)."""
    made: list[PoolAlias] = []

    def make(
        *,
        settings: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
        **pool: Any,
    ) -> PoolAlias:
        alias = new_pool_alias(settings=settings, options=options, **pool)
        made.append(alias)
        return alias

    yield make
    for alias in made:
        alias.close()


@pytest.fixture
def observer() -> Iterator[Observer]:
    """An unpooled connection that reports what the server sees."""
    watcher = Observer()
    yield watcher
    watcher.close()


@pytest.fixture
def second_login(observer: Observer) -> Iterator[dict[str, str]]:
    """A login of its own on the test server and database, with a password:
    its USER and PASSWORD (``SECOND_LOGIN_PASSWORD``), as settings."""
    with server_login(
        observer, SECOND_LOGIN_USER, SECOND_LOGIN_PASSWORD, drop=False
    ) as login:
        yield login


@pytest.fixture
def proxy(pool_alias: PoolAliasFactory) -> Iterator[TcpProxy]:
    """A TCP proxy (tests/support/tcp_proxy.py) in front of the test server."""
    settings_dict = pool_alias().settings_dict
    with tcp_proxy(settings_dict["HOST"], int(settings_dict["PORT"])) as running:
        yield running


@pytest.fixture
def only_private_servers(django_db_blocker: Any) -> Iterator[None]:
    """Database access for a test that uses servers of its own only: Django's
    test database is neither set up for it nor touched."""
    with django_db_blocker.unblock():
        yield


def private_server_or_skip(vendor: str = VENDOR) -> PrivateServer:
    """A running private server (tests/support/private_server.py); without
    the binaries, the test is skipped, or fails under CI=true."""
    private = start_private_server(vendor)
    if private is None:
        message = f"no {vendor} server binaries to start a private one"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return private
