"""CPU time per request in one process, configurations interleaved (``nox -s bench``).

Instruction counts (``benchmarks/instructions.py``) miss what a cold cache
costs. A pool's connect-and-return path runs once per request, between two
requests' worth of other work, so its code and data come back from memory
each time: on the 2026-12-01 VM ours ran 1.5% more instructions than a
persistent connection for the benchmark's view, and took 6-7% more CPU time.
Here each configuration is a database alias of one process (so all share the
process's layout and the machine's moment), and the view's three ORM queries
run between ``request_started`` and ``request_finished`` through that alias,
in blocks of BLOCK requests, the order rotating each round. A block's figure
is the thread's CPU time per request; a configuration's ratio is the median,
over rounds, of its block over the persistent alias's block of that round.
A second persistent alias gives this measurement's own noise, and the "floor"
(``benchmarks.floor``) what Django's connect and close code cost per request
around a pool that does nothing (a list).
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.micro import DRIVERS
from benchmarks.servers import MySQLServer, PostgreSQLCluster

ROOT = Path(__file__).resolve().parent.parent
BLOCK = 100
ROUNDS = 30
WARM_UP = 300
#: (label, ENGINE prefix, CONN_MAX_AGE, OPTIONS); the first is the baseline.
CONFIGS: list[tuple[str, str, int | None, dict[str, Any]]] = [
    ("persistent", "django.db.backends.", None, {}),
    ("persistent, second alias", "django.db.backends.", None, {}),
    ("django pool", "django.db.backends.", 0, {"pool": True}),
    ("floor: Django's connect/close + a list", "benchmarks.floor.", 0, {}),
    ("sapool", "django_sapool.backends.", 0, {}),
]


def child(driver: str, database: dict[str, Any]) -> dict[str, Any]:
    """Measure every configuration in this process (the child's side)."""
    if driver == "psycopg2":  # Django (and psycopg_pool) must pick psycopg2
        sys.modules["psycopg"] = None  # type: ignore[assignment]
    from django.conf import settings

    labels = [label for label, *_ in configs_for(driver)]
    settings.configure(
        DATABASES={
            "default": _alias(database, driver, CONFIGS[0]),
            **{
                f"c{index}": _alias(database, driver, config)
                for index, config in enumerate(configs_for(driver))
            },
        },
        INSTALLED_APPS=["benchmarks.app"],
        USE_TZ=True,
        TIME_ZONE="UTC",
        DEBUG=False,
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
    )
    import django

    django.setup()
    requests = [view_request(f"c{index}") for index in range(len(labels))]
    for _ in range(WARM_UP):
        for request in requests:
            request()
    times: list[list[float]] = [[] for _ in labels]
    for round_ in range(ROUNDS):
        shift = round_ % len(requests)
        for index in [*range(shift, len(requests)), *range(shift)]:
            request = requests[index]
            started = time.thread_time_ns()
            for _ in range(BLOCK):
                request()
            times[index].append((time.thread_time_ns() - started) / BLOCK / 1000)
    return {"labels": labels, "times": times}


def configs_for(driver: str) -> list[tuple[str, str, int | None, dict[str, Any]]]:
    # Django's own pool is psycopg 3 only.
    return [c for c in CONFIGS if not c[3].get("pool") or driver == "psycopg"]


def _alias(
    database: dict[str, Any],
    driver: str,
    config: tuple[str, str, int | None, dict[str, Any]],
) -> dict[str, Any]:
    _, engine, max_age, options = config
    return {
        **database,
        "ENGINE": engine + DRIVERS[driver],
        "CONN_MAX_AGE": max_age,
        "OPTIONS": options,
    }


def view_request(alias: str) -> Callable[[], None]:
    """The benchmark view's queries through ``alias``, as one request."""
    from django.core.signals import request_finished, request_started

    from benchmarks.app.models import Item

    rows = random.Random(0)
    items = Item.objects.using(alias)

    def request() -> None:
        request_started.send(sender=None)
        item = items.get(pk=rows.randint(1, 1000))
        in_stock = items.filter(stock__gt=0).count()
        cheapest = list(items.order_by("price").values_list("name", flat=True)[:5])
        assert item.name
        assert in_stock >= 0
        assert cheapest
        request_finished.send(sender=None)

    return request


def summarize(labels: list[str], times: list[list[float]]) -> list[dict[str, Any]]:
    """Per configuration: median CPU µs per request, and the median over rounds
    of its block's time over the baseline's (the first) block of that round."""
    base = times[0]
    return [
        {
            "label": label,
            "us": statistics.median(own),
            "ratio": statistics.median(t / b for t, b in zip(own, base, strict=True)),
        }
        for label, own in zip(labels, times, strict=True)
    ]


def table(results: dict[str, list[dict[str, Any]]]) -> str:
    lines = [
        f"CPU time per request of the benchmark's view, in one process "
        f"({ROUNDS} rounds of {BLOCK} requests per configuration, interleaved; "
        "the ratio is the median over rounds of its time over persistent's)",
        "",
        "| driver | configuration | CPU µs per request | over persistent |",
        "|---|---|---:|---:|",
    ]
    for driver, rows in results.items():
        lines += [
            f"| {driver} | {row['label']} | {row['us']:.0f} | {row['ratio']:.3f}x |"
            for row in rows
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        driver, database = sys.argv[2], json.loads(sys.argv[3])
        if hasattr(os, "sched_setaffinity"):  # one CPU: its caches, its speed
            os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        print(json.dumps(child(driver, database)))
        return
    wanted = [d for d in DRIVERS if not sys.argv[1:] or d in sys.argv[1:]]
    used = {DRIVERS[d] for d in wanted}
    servers: dict[str, PostgreSQLCluster | MySQLServer] = {}
    results: dict[str, list[dict[str, Any]]] = {}
    try:
        for vendor in sorted(used):
            server = PostgreSQLCluster() if vendor == "postgresql" else MySQLServer()
            server.start()
            servers[vendor] = server
        for driver in wanted:
            print(f"cpu: {driver} ...", flush=True)
            database = servers[DRIVERS[driver]].database_settings()
            output = subprocess.run(
                [sys.executable, "-m", "benchmarks.cpu", "--child", driver,
                 json.dumps(database)],
                env={**os.environ, "PYTHONPATH": str(ROOT)},
                cwd=ROOT, check=True, capture_output=True, text=True,
            ).stdout  # fmt: skip
            measured = json.loads(output.splitlines()[-1])
            results[driver] = summarize(measured["labels"], measured["times"])
    finally:
        for server in servers.values():
            server.stop()
    text = table(results)
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "cpu.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
