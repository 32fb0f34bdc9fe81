"""Fault: the database server restarts while 8 threads send requests.

The server is a private one (tests/support/private_server.py), so the restart harms
no other run. Each request writes two rows in one transaction and commits.
Afterwards the server is asked what it holds: every acknowledged request's
two rows, and no request with only one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests import settings as test_settings
from tests.support.failover import restart_under_load
from tests.support.fixtures import private_server_or_skip
from tests.support.pool_alias import PoolAliasFactory
from tests.support.private_server import PrivateServer
from tests.support.server import Observer

pytestmark = [
    pytest.mark.faults,
    pytest.mark.direct_server(
        reason="the private server is reached directly, never through PgBouncer"
    ),
    pytest.mark.usefixtures("only_private_servers"),
]


@pytest.fixture(scope="module")
def server(django_db_blocker: Any) -> Iterator[PrivateServer]:
    """A private server with the table the requests write to, ``restart_rows``."""
    with django_db_blocker.unblock():
        private = private_server_or_skip()
        try:  # the server goes away with the run, whatever fails
            observer = Observer(**private.settings)
            observer.rows(
                "CREATE TABLE restart_rows "
                "(request VARCHAR(60) NOT NULL, part INT NOT NULL)"
            )
            observer.close()
            yield private
        finally:
            private.close()


@pytest.mark.parametrize("pause", [False, True], ids=["steady load", "paused load"])
@pytest.mark.parametrize("pre_ping", [False, True], ids=["no pre_ping", "pre_ping"])
def test_server_restart_under_load(
    pool_alias: PoolAliasFactory, server: PrivateServer, pre_ping: bool, pause: bool
) -> None:
    outcomes, back, stats = restart_under_load(
        pool_alias, server, pre_ping=pre_ping, pause=pause
    )
    stale = stats["stale"]
    observer = Observer(**server.settings)
    parts = dict(
        observer.rows(
            "SELECT request, COUNT(*) FROM restart_rows WHERE request IN "
            f"({', '.join(['%s'] * len(outcomes))}) GROUP BY request",
            [o.request for o in outcomes],
        )
    )
    sessions = observer.value(
        "SELECT COUNT(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
        if test_settings.VENDOR == "postgresql"
        else "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
        "WHERE COMMAND <> 'Daemon'"
    )
    observer.close()
    failed = [o for o in outcomes if not o.ok]
    after_back = [o for o in outcomes if o.started > back]
    acknowledged = [o for o in outcomes if o.ok]
    label = ("pre_ping" if pre_ping else "no pre_ping") + (
        ", paused while down" if pause else ""
    )
    print(
        f"\n[fault] server restart under load ({label}): "
        f"attempted={len(outcomes)}, succeeded={len(acknowledged)}, "
        f"failed={len(failed)}, failed_after_back={sum(not o.ok for o in after_back)}, "
        f"stale_connections={stale}, "
        f"connects_failed={stats['connections_errors']}, "
        f"connections_opened={stats['connections_num']}, "
        f"rows_acknowledged={2 * len(acknowledged)}, "
        f"rows_found={sum(parts.values())}, "
        f"slowest_s={max(o.ended - o.started for o in outcomes):.2f}, "
        f"server_sessions_at_end={int(sessions) - 1}"
    )
    # Nothing committed is lost; nothing half-written is committed.
    assert all(parts.get(o.request) == 2 for o in acknowledged)
    assert set(parts.values()) <= {2}
    # Failures are quick, not hangs on a dead socket.
    assert max(o.ended - o.started for o in outcomes) < 5
    assert sum(o.ok for o in after_back) > 0  # traffic resumed, no app restart
    if pre_ping:  # no request that starts after the server is back fails
        assert all(o.ok for o in after_back)
    else:  # each stale connection fails one request at most, then is gone
        assert sum(not o.ok for o in after_back) <= stale
        if pause:  # all stale ones were still pooled: each failed once
            assert sum(not o.ok for o in after_back) > 0
