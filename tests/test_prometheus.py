"""The Prometheus collector exports what get_stats() and the server say."""

from __future__ import annotations

import os

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from django_sapool.prometheus import register
from tests.support.pool_alias import PoolAliasFactory
from tests.support.server import Observer, backend_id
from tests.test_prometheus_metrics import forget_registration  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True)


def sample(text: str, name: str, alias: str) -> float:
    labels = f'{{alias="{alias}",pid="{os.getpid()}"}}'
    for line in text.splitlines():
        if line.startswith(name + labels):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name}{labels} not exported:\n{text}")


@pytest.mark.session_bound(
    reason=(
        "compares open connections with live server sessions; in transaction "
        "mode idle connections hold none"
    )
)
def test_scrape_shows_checkouts_and_the_servers_sessions(
    pool_alias: PoolAliasFactory, observer: Observer
) -> None:
    alias = pool_alias(pool_size=2)
    wrapper = alias.wrapper()
    seen = set()
    for _ in range(3):
        seen.add(backend_id(wrapper))
        wrapper.close()
    registry = CollectorRegistry()
    register(registry)
    text = generate_latest(registry).decode()
    assert sample(text, "django_sapool_requests_num_total", alias.name) == 3
    assert sample(text, "django_sapool_connections_num_total", alias.name) == 1
    open_now = sample(text, "django_sapool_pool_size", alias.name)
    assert open_now == len(observer.alive(seen)) == 1
    assert sample(text, "django_sapool_pool_used", alias.name) == 0
    assert "# HELP django_sapool_pool_used connections lent to Django now" in text
