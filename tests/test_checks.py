"""``manage.py sapool_budget`` against the real server (its limits, our pools).

The checks that need no server are in tests/logic/test_checks.py.
"""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connections
from django.test.utils import CaptureQueriesContext

import django_sapool
from django_sapool._budget import server_limits
from tests.support.server import VENDOR, Observer


@pytest.mark.django_db(transaction=True)
def test_budget_reports_the_servers_real_limit(observer: Observer) -> None:
    if VENDOR == "postgresql":
        limit = int(observer.value("SHOW max_connections"))
    else:
        limit = int(observer.value("SELECT @@max_connections"))
    out = StringIO()
    call_command("sapool_budget", workers=3, threads=2, stdout=out)
    report = out.getvalue()
    assert f"max_connections={limit}" in report
    # The test settings: pool_size 4 + max_overflow 10, so min(2, 14) = 2 each.
    assert "default: 3 workers x min(2 threads, pool_size+max_overflow=14) = 6" in (
        report
    )
    assert report.rstrip().endswith("fits")
    connections.close_all()


@pytest.mark.django_db(transaction=True)
def test_budget_fails_when_the_pools_cannot_fit() -> None:
    with pytest.raises(CommandError, match="may need more connections"):
        call_command("sapool_budget", workers=100_000, threads=8, stdout=StringIO())
    connections.close_all()


@pytest.mark.django_db(transaction=True)
def test_budget_reads_the_servers_figures_as_any_version_reports_them(
    observer: Observer,
) -> None:
    with CaptureQueriesContext(connections["default"]) as queries:
        max_connections, reserved, in_use = server_limits("default")
    if VENDOR == "postgresql":
        assert max_connections == int(observer.value("SHOW max_connections"))
        assert reserved == int(observer.value("SHOW superuser_reserved_connections"))
    else:
        assert max_connections == int(observer.value("SELECT @@max_connections"))
        assert reserved == 0
        # MySQL 8.0 removed information_schema.GLOBAL_STATUS and 5.7 refuses it
        # by default (show_compatibility_56): no MySQL 8 here, so check that
        # nothing sent relies on it, and the figures against MariaDB's.
        sent = " ".join(query["sql"] for query in queries).lower()
        assert "information_schema" not in sent
    # The observer's session and ours, at least; never past the limit (MySQL
    # keeps one more for an administrator).
    assert 2 <= in_use <= max_connections + 1
    connections.close_all()


@pytest.mark.django_db(transaction=True)
def test_budget_counts_a_thread_each_when_overflow_is_unlimited() -> None:
    pool = connections.settings["default"]["OPTIONS"]["sapool"]
    saved = dict(pool)
    pool.update(pool_size=1, max_overflow=-1)
    out = StringIO()
    try:
        with pytest.raises(CommandError):
            call_command("sapool_budget", workers=100_000, threads=8, stdout=out)
    finally:
        pool.clear()
        pool.update(saved)
        connections.close_all()
        django_sapool.dispose("default")
    report = out.getvalue()
    assert (
        "default: 100000 workers x 8 threads (max_overflow=-1: no pool limit) = 800000"
    ) in report
    assert "needs 800000 of" in report
    assert report.rstrip().endswith("DOES NOT FIT")
