"""Micro-benchmark of Django's connection cycle in one process (``nox -s bench``).

A cycle is what a request does to its connection: ``ensure_connection()``, one
trivial query, ``close()`` (for the persistent configuration, Django's
end-of-request ``close_if_unusable_or_obsolete()`` instead). Each configuration
runs in its own process (the PostgreSQL driver is chosen at import), over TCP
with password authentication, best of several batches. "checkout" is the same
cycle without the query: the pure cost of getting and giving back a connection.
"sapool + OpenTelemetry" is sapool after ``django_sapool.opentelemetry.instrument()``
with the SDK's MeterProvider (an in-memory reader, nothing exported): the
table's last lines give its cost per checkout + checkin as a ratio.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.servers import MySQLServer, PostgreSQLCluster

ROOT = Path(__file__).resolve().parent.parent

#: (label, ENGINE kind, CONN_MAX_AGE, OPTIONS); "stock" is Django's own backend.
CONFIGS: list[tuple[str, str, int | None, dict[str, Any]]] = [
    ("connect per cycle", "stock", 0, {}),
    ("persistent", "stock", None, {}),
    ("django pool", "stock", 0, {"pool": True}),
    ("sapool", "sapool", 0, {}),
    ("sapool + OpenTelemetry", "sapool-otel", 0, {}),
    ("sapool + OpenTelemetry, no-op provider", "sapool-otel-noop", 0, {}),
]
DRIVERS = {"psycopg": "postgresql", "psycopg2": "postgresql", "mysqlclient": "mysql"}


def instrument_if_asked() -> None:
    """OpenTelemetry, when SAPOOL_BENCH_OTEL says so ("sdk" or "noop")."""
    otel = os.environ.get("SAPOOL_BENCH_OTEL")
    if not otel:
        return
    from opentelemetry.metrics import NoOpMeterProvider
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from django_sapool.opentelemetry import instrument

    if otel == "noop":  # the hooks' own cost: every record() does nothing
        instrument(NoOpMeterProvider())
    else:
        instrument(MeterProvider(metric_readers=[InMemoryMetricReader()]))


def otel_env(kind: str) -> dict[str, str]:
    """The environment that makes a child instrument for configuration ``kind``."""
    if not kind.startswith("sapool-otel"):
        return {}
    return {"SAPOOL_BENCH_OTEL": "noop" if kind.endswith("noop") else "sdk"}


def child() -> None:
    """Measure one configuration (run in a fresh process)."""
    import django

    django.setup()
    from django.db import connection

    instrument_if_asked()
    persistent = connection.settings_dict["CONN_MAX_AGE"] is None
    query = "SELECT 1"

    def with_query() -> None:
        with connection.cursor() as cursor:
            cursor.execute(query)
            cursor.fetchone()
        finish()

    def checkout_only() -> None:
        connection.ensure_connection()
        finish()

    def finish() -> None:
        if persistent:
            connection.close_if_unusable_or_obsolete()
        else:
            connection.close()

    connecting = connection.settings_dict["CONN_MAX_AGE"] == 0 and (
        "sapool" not in connection.settings_dict["ENGINE"]
        and "pool" not in connection.settings_dict["OPTIONS"]
    )
    cycles = 100 if connecting else 3000
    result = {}
    for name, cycle in (("query", with_query), ("checkout", checkout_only)):
        for _ in range(cycles // 10):
            cycle()  # warm up
        batches = []
        for _ in range(7):
            started = time.perf_counter()
            for _ in range(cycles):
                cycle()
            batches.append((time.perf_counter() - started) / cycles * 1e6)
        result[name] = min(batches)
    close_pool = getattr(connection, "close_pool", None)
    if close_pool:
        close_pool()
    print(json.dumps(result))


def measure(
    driver: str, database: dict[str, Any]
) -> list[tuple[str, dict[str, float]]]:
    rows = []
    for label, kind, max_age, options in CONFIGS:
        if options.get("pool") and driver != "psycopg":
            continue  # Django's own pool is psycopg 3 only
        engine = (
            "django_sapool.backends."
            if kind.startswith("sapool")
            else "django.db.backends."
        )
        settings = {
            **database,
            "ENGINE": engine + DRIVERS[driver],
            "CONN_MAX_AGE": max_age,
            "OPTIONS": options,
        }
        env = {
            **os.environ,
            "SAPOOL_BENCH_DATABASE": json.dumps(settings),
            "SAPOOL_BENCH_DRIVER": driver,
            "PYTHONPATH": str(ROOT),
            "DJANGO_SETTINGS_MODULE": "benchmarks.app.settings",
        }
        env.update(otel_env(kind))
        output = subprocess.run(
            [sys.executable, "-m", "benchmarks.micro", "--child"],
            env=env,
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        )
        rows.append((label, json.loads(output.stdout.splitlines()[-1])))
    return rows


def table(results: dict[str, list[tuple[str, dict[str, float]]]]) -> str:
    lines = [
        "| driver | configuration | cycle with `SELECT 1`, µs "
        "| checkout + checkin only, µs |",
        "|---|---|---:|---:|",
    ]
    for driver, rows in results.items():
        for label, values in rows:
            query, checkout = values["query"], values["checkout"]
            lines.append(f"| {driver} | {label} | {query:.0f} | {checkout:.1f} |")
    lines.append("")
    for driver, rows in results.items():
        by_label = dict(rows)
        for label in (
            "sapool + OpenTelemetry",
            "sapool + OpenTelemetry, no-op provider",
        ):
            if "sapool" not in by_label or label not in by_label:
                continue
            plain = by_label["sapool"]["checkout"]
            instrumented = by_label[label]["checkout"]
            lines.append(
                f"{driver}: {label} / sapool, checkout + checkin: "
                f"x{instrumented / plain:.2f} ({instrumented - plain:+.1f} µs)"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    if "--child" in sys.argv:
        child()
        return
    results: dict[str, list[tuple[str, dict[str, float]]]] = {}
    servers: dict[str, PostgreSQLCluster | MySQLServer] = {
        "postgresql": PostgreSQLCluster(),
        "mysql": MySQLServer(),
    }
    wanted = [d for d in DRIVERS if not sys.argv[1:] or d in sys.argv[1:]]
    try:
        for vendor, server in servers.items():
            if any(DRIVERS[d] == vendor for d in wanted):
                server.start()
        for driver in wanted:
            print(f"micro: {driver} ...", flush=True)
            results[driver] = measure(
                driver, servers[DRIVERS[driver]].database_settings()
            )
    finally:
        for vendor, server in servers.items():
            if any(DRIVERS[d] == vendor for d in wanted):
                server.stop()
    text = table(results)
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "micro.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
