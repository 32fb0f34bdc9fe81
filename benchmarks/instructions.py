"""Client-side instructions per request, counted under callgrind (``nox -s bench``).

Requests per second move 10-30% between runs on a shared machine; the number
of instructions the client executes does not. A request here is what Django
does around a view that runs three small queries: ``request_started``, three
``SELECT 1`` through ``connection.cursor()``, ``request_finished``. Each
configuration runs once under callgrind in a fresh process: after a warm-up,
N requests run inside ``sys.call_tracing()``, and callgrind counts only
inside that call (``--toggle-collect``), so start-up and warm-up stay out.
Counting two whole processes and subtracting, as this did before, let the
start-up's own variation through: about 4K per request. Each figure is the
median of three such counts with the child's addresses moved (LAYOUTS).

A second table counts a whole request of the HTTP benchmark's view (three ORM
queries, the URL resolver, the JSON response) through Django's WSGI handler,
in process: our cost as a share of a real request, which bounds the req/s
ratio a perfectly quiet machine would show (gunicorn's and the kernel's work
per request dilutes it further).
"""

from __future__ import annotations

import gc
import io
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.micro import CONFIGS, DRIVERS, instrument_if_asked, otel_env
from benchmarks.servers import MySQLServer, PostgreSQLCluster

ROOT = Path(__file__).resolve().parent.parent
WARM_UP = 50
REQUESTS = 100
#: The C function the measured requests run in (sys.call_tracing()).
COUNTED = "sys_call_tracing"
#: Bytes of padding in the child's environment, one count for each: under
#: valgrind a process's addresses are the same from run to run, and they
#: decide which lookups collide in CPython's type attribute cache. Moving
#: them moved a whole request's count by up to 13K here (psycopg2, same
#: code), so each figure is the median over these layouts.
LAYOUTS = (0, 1000, 2000)


def child(requests: int, whole: bool) -> None:
    """Run the warm-up and ``requests`` request cycles (under callgrind)."""
    import django

    django.setup()
    from django.core.signals import request_finished, request_started

    instrument_if_asked()
    from django.db import connection

    def request() -> None:
        request_started.send(sender=None)
        for _ in range(3):
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
                cursor.fetchone()
        request_finished.send(sender=None)

    if whole:
        request = view_request()
    for _ in range(WARM_UP):
        request()
    # A cyclic collection falling among the counted requests in one
    # configuration and not in another would add its cost: none runs then.
    gc.collect()
    gc.disable()

    def measured() -> None:
        for _ in range(requests):
            request()

    # callgrind counts inside this call only (see count()); nothing else in
    # a request calls it.
    sys.call_tracing(measured, ())


def view_request() -> Callable[[], None]:
    """One GET of the benchmark's view through Django's WSGI handler."""
    import random

    from django.core.handlers.wsgi import WSGIHandler

    handler = WSGIHandler()
    random.seed(0)  # the view reads a random row: the same rows in every run
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/catalog/",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "127.0.0.1",
        "wsgi.url_scheme": "http",
    }

    def request() -> None:
        response = handler({**environ, "wsgi.input": io.BytesIO()}, _ignore)
        b"".join(response)
        response.close()

    return request


def _ignore(status: str, headers: list[tuple[str, str]]) -> None:
    # An error page is a shorter request: it must not pass for the view.
    if not status.startswith("200"):
        raise SystemExit(f"the benchmark's view answered {status}")


def count(
    settings: dict[str, Any],
    driver: str,
    kind: str,
    requests: int,
    whole: bool,
    layout: int = 0,
) -> int:
    """Instructions of one child process run under callgrind."""
    env = {
        **otel_env(kind),
        **os.environ,
        "SAPOOL_BENCH_DATABASE": json.dumps(settings),
        "SAPOOL_BENCH_DRIVER": driver,
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "benchmarks.app.settings",
        "PYTHONHASHSEED": "0",
        # Moves every address in the child (see LAYOUTS).
        "SAPOOL_BENCH_LAYOUT": "x" * layout,
    }
    with tempfile.TemporaryDirectory(prefix="sapool-callgrind-") as tmp:
        out = Path(tmp) / "callgrind.out"
        subprocess.run(
            [
                "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                "--collect-atstart=no", f"--toggle-collect={COUNTED}",
                sys.executable, "-m", "benchmarks.instructions",
                "--whole" if whole else "--child", str(requests),
            ],
            env=env, cwd=ROOT, check=True, capture_output=True, text=True,
        )  # fmt: skip
        match = re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.M)
    if match is None:
        raise SystemExit(f"no instruction count in callgrind's output for {driver}")
    return int(match.group(1))


def per_request(
    settings: dict[str, Any], driver: str, kind: str, whole: bool = False
) -> int:
    """The median, over LAYOUTS, of one layout's instructions per request."""

    def one(layout: int) -> int:
        total = count(settings, driver, kind, REQUESTS, whole, layout)
        if total < 1000 * REQUESTS:  # this Python's build names it otherwise
            raise SystemExit(f"callgrind counted nothing inside {COUNTED}()")
        return round(total / REQUESTS)

    # One child per CPU at a time: the load does not change what is counted.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return round(statistics.median(pool.map(one, LAYOUTS)))


#: Configurations whose whole request is counted too.
WHOLE = ("persistent", "django pool", "sapool")


def measure(driver: str, database: dict[str, Any]) -> dict[str, int]:
    rows: dict[str, int] = {}
    for label, kind, max_age, options in CONFIGS:
        if max_age == 0 and kind == "stock" and not options:
            continue  # connecting per request: not what a pool is compared with
        if options.get("pool") and driver != "psycopg":
            continue  # Django's own pool is psycopg 3 only
        sapool = kind.startswith("sapool")
        engine = "django_sapool.backends." if sapool else "django.db.backends."
        settings = {
            **database,
            "ENGINE": engine + DRIVERS[driver],
            "CONN_MAX_AGE": max_age,
            "OPTIONS": options,
        }
        print(f"instructions: {driver} {label} ...", flush=True)
        rows[label] = per_request(settings, driver, kind)
        if label in WHOLE:
            print(f"instructions: {driver} {label}, whole request ...", flush=True)
            rows[f"{label} (view)"] = per_request(settings, driver, kind, whole=True)
    return rows


def table(results: dict[str, dict[str, int]]) -> str:
    lines = [
        "| driver | persistent | Django's pool | django-sapool "
        "| ours over persistent | Django's pool over persistent "
        "| + OpenTelemetry (SDK) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for driver, rows in results.items():
        base, ours = rows["persistent"], rows["sapool"]
        django_pool = rows.get("django pool")
        cells = [
            driver,
            f"{base / 1000:.0f}K",
            "-" if django_pool is None else f"{django_pool / 1000:.0f}K",
            f"{ours / 1000:.0f}K",
            f"+{(ours - base) / 1000:.0f}K",
            "-" if django_pool is None else f"+{(django_pool - base) / 1000:.0f}K",
            _extra(rows.get("sapool + OpenTelemetry"), ours),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def view_table(results: dict[str, dict[str, int]]) -> str:
    lines = [
        "| driver | persistent | Django's pool | django-sapool "
        "| ours over persistent | Django's pool over persistent "
        "| persistent / ours |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for driver, rows in results.items():
        base, ours = rows["persistent (view)"], rows["sapool (view)"]
        django_pool = rows.get("django pool (view)")
        cells = [
            driver,
            f"{base / 1e6:.3f}M",
            "-" if django_pool is None else f"{django_pool / 1e6:.3f}M",
            f"{ours / 1e6:.3f}M",
            f"+{(ours - base) / 1000:.0f}K ({(ours - base) / base:.1%})",
            "-"
            if django_pool is None
            else f"+{(django_pool - base) / 1000:.0f}K "
            f"({(django_pool - base) / base:.1%})",
            f"{base / ours:.3f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _extra(value: int | None, ours: int) -> str:
    return "-" if value is None else f"+{(value - ours) / 1000:.1f}K over ours"


def main() -> None:
    if "--child" in sys.argv or "--whole" in sys.argv:
        child(int(sys.argv[-1]), whole="--whole" in sys.argv)
        return
    if not shutil.which("valgrind"):
        raise SystemExit(
            "the instruction counts need valgrind: apt-get install valgrind"
        )
    wanted = [d for d in DRIVERS if not sys.argv[1:] or d in sys.argv[1:]]
    servers: dict[str, PostgreSQLCluster | MySQLServer] = {
        "postgresql": PostgreSQLCluster(),
        "mysql": MySQLServer(),
    }
    used = {DRIVERS[d] for d in wanted}
    results: dict[str, dict[str, int]] = {}
    try:
        for vendor in used:
            servers[vendor].start()
        for driver in wanted:
            database = servers[DRIVERS[driver]].database_settings()
            results[driver] = measure(driver, database)
    finally:
        for vendor in used:
            servers[vendor].stop()
    text = (
        f"Client instructions per request (3 x SELECT 1 between request_started "
        f"and request_finished; {REQUESTS} requests after {WARM_UP}, callgrind, "
        f"median of {len(LAYOUTS)} address layouts)\n\n"
        + table(results)
        + "\nA whole request of the HTTP benchmark's view, in process through "
        "Django's WSGI handler (its share bounds the req/s ratio)\n\n"
        + view_table(results)
    )
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "instructions.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
