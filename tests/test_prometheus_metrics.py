"""Prometheus: register() twice is harmless; histograms count what the pool did;
under gunicorn with several workers, /metrics shows every worker's pools."""

from __future__ import annotations

import re
import shutil
import signal
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

import django_sapool
from django_sapool import prometheus
from django_sapool._listeners import remove_listener
from django_sapool.prometheus import BUCKETS, register
from tests.support.pool_alias import PoolAliasFactory
from tests.support.private_server import free_port
from tests.support.recipes import (
    WORKERS,
    Program,
    Sessions,
    drive,
    need_module,
    sessions_by_process,
    wait_until_serving,
)
from tests.support.server import Observer, backend_id

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def forget_registration() -> Iterator[None]:
    """register() hooks every pool of the process: undo it for the next tests."""
    yield
    if prometheus._histograms is not None:
        remove_listener(prometheus._histograms)
        prometheus._histograms = None
    prometheus._collectors.clear()


def samples(text: str, name: str) -> dict[str, float]:
    """``{labels: value}`` of one metric name in an exposition."""
    found = {}
    for line in text.splitlines():
        match = re.fullmatch(rf"{re.escape(name)}(\{{[^}}]*\}})? (\S+)", line)
        if match:
            found[match.group(1) or ""] = float(match.group(2))
    return found


def value(text: str, name: str, **labels: str) -> float:
    wanted = [f'{key}="{label}"' for key, label in labels.items()]
    matches = [
        number
        for found, number in samples(text, name).items()
        if all(label in found for label in wanted)
    ]
    assert len(matches) == 1, (name, labels, samples(text, name))
    return matches[0]


def test_register_twice_does_not_raise() -> None:
    registry = CollectorRegistry()
    first = register(registry)
    assert register(registry) is first  # --preload plus post_fork, say
    generate_latest(registry)  # no DuplicateTimeseries either at scrape time


@pytest.mark.direct_server(reason="counts the server sessions the pool opened")
def test_histograms_count_checkouts_connects_and_returns(
    pool_alias: PoolAliasFactory, observer: Observer
) -> None:
    registry = CollectorRegistry()
    register(registry)
    alias = pool_alias(pool_size=1, max_overflow=1, timeout=0.2)
    first, second = alias.wrapper(), alias.wrapper()
    seen = {backend_id(first), backend_id(second)}  # the second: an overflow
    assert len(observer.alive(seen)) == 2
    with pytest.raises(django_sapool.PoolTimeout):
        alias.wrapper().connect()
    first.close()
    second.close()
    text = generate_latest(registry).decode()
    name = "django_sapool_connection_"
    assert value(text, name + "create_seconds_count", alias=alias.name) == 2
    assert value(text, name + "wait_seconds_count", alias=alias.name) == 3
    assert value(text, name + "use_seconds_count", alias=alias.name) == 2
    # The timed-out checkout waited 0.2 s: in no bucket below 0.1 s.
    assert value(text, name + "wait_seconds_bucket", alias=alias.name, le="0.1") == 2
    assert value(text, name + "wait_seconds_bucket", alias=alias.name, le="0.25") == 3
    assert value(text, "django_sapool_requests_timeouts_total", alias=alias.name) == 1
    assert BUCKETS[0] <= 0.001  # sub-millisecond
    assert BUCKETS[-2] >= 10  # to tens of seconds


# gunicorn with 2 workers, prometheus_client's multiprocess mode ----------------


@pytest.mark.direct_server(reason="matches each worker's pool with its server sessions")
@pytest.mark.faults
def test_gunicorn_metrics_show_every_worker(
    spawn: Callable[..., Program],
    sessions: Sessions,
    tmp_path: Path,
) -> None:
    need_module("gunicorn")
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    port = free_port()
    program = spawn(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "tests.recipes.wsgi:application",
            f"--bind=127.0.0.1:{port}",
            f"--workers={WORKERS}",
            "--log-level=warning",
            "--config=python:tests.recipes.gunicorn_metrics_conf",
        ],
        env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)},
    )
    url = f"http://127.0.0.1:{port}/backend/"
    wait_until_serving(program, url)
    results = drive(url, sessions)
    used = sessions_by_process(results)
    assert len(used) == WORKERS
    time.sleep(1.5)  # every worker copies its figures each second
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}/metrics/", timeout=30) as response:
        text = response.read().decode()
    for pid, ids in used.items():
        # Each worker's pool, as the server sees its sessions.
        alive = len(sessions.observer.alive(ids))
        assert value(text, "django_sapool_pool_size", pid=str(pid)) == alive
        assert value(text, "django_sapool_pool_used", pid=str(pid)) == 0
        assert value(text, "django_sapool_pool_min", pid=str(pid)) == 2
    # Counters and histograms are summed over the workers. wait_until_serving
    # made requests too: one checkout each, like drive()'s.
    requests = value(text, "django_sapool_requests_num_total", alias="default")
    assert requests >= len(results)
    assert value(text, "django_sapool_connection_wait_seconds_count") == requests
    opened = sum(len(ids) for ids in used.values())
    connects = value(text, "django_sapool_connections_num_total", alias="default")
    assert connects >= opened
    assert value(text, "django_sapool_connection_create_seconds_count") == connects
    program.stop(signal.SIGTERM)
    shutil.rmtree(metrics_dir)
