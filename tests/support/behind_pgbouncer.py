"""Run the test suite through PgBouncer, in transaction and in session pool mode.

    python -m tests.support.behind_pgbouncer [--modes transaction,session]
        [--drivers psycopg,psycopg2] [--set KEY=VALUE ...] [-- pytest args]

For each pool mode and driver this starts a private PgBouncer in front of the
test server (tests/support/pgbouncer.py) and runs pytest with SAPOOL_PG_HOST/PORT
pointing at it, the settings a user behind PgBouncer needs
(tests/pgbouncer_settings.py), and the observer (tests/support/server.py) talking to
the server itself. Deselected:

- ``direct_server`` tests in both modes: they identify our connections by the
  server backend behind them (opened and closed with ours, killed under ours,
  dropped databases); PgBouncer keeps server connections of its own.
- ``session_bound`` tests in transaction mode: they need session state (SET,
  temporary tables, advisory locks, one backend pid) to outlive a transaction.
- tests/test_pgbouncer.py, which starts its own PgBouncer in front of the
  real server.

PgBouncer hands out server sessions round-robin here, from at least four, so
that no test passes only because it got the same server session back.

pytest-django's test database is kept (``--reuse-db``) because PgBouncer
holds server connections to it, so ``DROP DATABASE`` would fail; it is dropped
on the server once PgBouncer is gone. Exits non-zero if any run failed.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import cast

import pytest

from tests.support.pgbouncer import (
    PoolMode,
    Upstream,
    dbapi,
    find_pgbouncer,
    running_pgbouncer,
)

ROOT = Path(__file__).absolute().parents[2]
MARKERS = {
    "direct_server": (
        "asserts which server backend serves a connection, or that it opens and "
        "ends with ours; PgBouncer keeps server connections of its own (not run "
        "behind PgBouncer)"
    ),
    "session_bound": (
        "needs server session state to outlive a transaction; PgBouncer's "
        "transaction mode breaks that (not run behind it in that mode)"
    ),
}
DESELECT = {
    "transaction": "not direct_server and not session_bound",
    "session": "not direct_server",
}
#: Our pools are small; the suite's threads and pools fit in 20 server
#: connections. Waiting clients fail after 15 s instead of the default 120 s
#: (the one test that connects to a missing database waits that long).
#: Server sessions are handed out round-robin from at least four, not LIFO
#: (PgBouncer's default): a test that passes only because PgBouncer gave its
#: connection the same server session again would hide that it needs one.
BOUNCER_SETTINGS: dict[str, str | int] = {
    "query_wait_timeout": 15,
    "server_round_robin": 1,
    "min_pool_size": 4,
}


def pytest_configure(config: pytest.Config) -> None:
    """Register our markers (loaded as a plugin with ``-p``), for --strict-markers."""
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")


def drop_test_database(upstream: Upstream) -> None:
    """Drop pytest-django's kept test database on the server itself.

    PgBouncer is gone by now; PostgreSQL waits up to 5 s for its sessions to
    end. No FORCE: a run of someone else's on the same server keeps its own.
    """
    name = os.environ.get("SAPOOL_TEST_DB_NAME") or f"test_{upstream.name}"
    database = dbapi()
    connection = database.connect(
        host=upstream.host,
        port=upstream.port,
        user=upstream.user,
        password=upstream.password,
        dbname="postgres",
    )
    try:
        connection.autocommit = True
        connection.cursor().execute(f'DROP DATABASE IF EXISTS "{name}"')
    except database.Error as exc:
        print(f"could not drop {name}: {exc}", file=sys.stderr)
    finally:
        connection.close()


def run(
    mode: PoolMode, driver: str, pytest_args: list[str], settings: dict[str, str]
) -> tuple[int, str]:
    """One pytest run behind a fresh PgBouncer; its exit code and summary line."""
    upstream = Upstream.from_environment()
    with running_pgbouncer(
        mode,
        default_pool_size=20,
        max_client_conn=200,
        settings={**BOUNCER_SETTINGS, **settings},
    ) as bouncer:
        env = {
            **os.environ,
            "SAPOOL_TEST_DRIVER": driver,
            "SAPOOL_PG_HOST": bouncer.host,
            "SAPOOL_PG_PORT": str(bouncer.port),
            "SAPOOL_OBSERVER_PG_HOST": upstream.host,
            "SAPOOL_OBSERVER_PG_PORT": str(upstream.port),
            "SAPOOL_PGBOUNCER_POOL_MODE": mode,
            "PYTHONUNBUFFERED": "1",  # pytest's output as it comes
        }
        command = [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "tests.support.behind_pgbouncer",
            "--ds=tests.pgbouncer_settings",
            "--reuse-db",
            "--ignore=tests/test_pgbouncer.py",
            "-m",
            DESELECT[mode],
            *pytest_args,
        ]
        print(f"=== PgBouncer {mode} mode, {driver}: port {bouncer.port}", flush=True)
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
        )
        assert process.stdout is not None
        summary = ""
        try:
            for line in process.stdout:
                print(line, end="", flush=True)
                if re.search(r"\d+ (passed|failed|errors?)\b.* in [\d.]+s", line):
                    summary = line.strip("= \n")
        finally:  # also on Ctrl-C: no pytest left talking to a stopped PgBouncer
            if process.poll() is None:
                process.terminate()
            code = process.wait()
    drop_test_database(upstream)
    return code, summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", default="transaction,session")
    parser.add_argument("--drivers", default="psycopg,psycopg2")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a pgbouncer.ini setting, e.g. server_round_robin=1",
    )
    parser.add_argument("pytest_args", nargs="*", help="after --: for pytest")
    args = parser.parse_args(argv)
    # Stopped with SIGTERM (a CI timeout, kill): unwind, so PgBouncer is stopped.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    settings = dict(item.split("=", 1) for item in args.set)
    if find_pgbouncer() is None:
        print("pgbouncer is not installed: apt-get install pgbouncer", file=sys.stderr)
        return 2
    results = []
    for mode in args.modes.split(","):
        if mode not in DESELECT:
            parser.error(f"--modes: {mode!r} is not transaction or session")
        for driver in args.drivers.split(","):
            pool_mode = cast(PoolMode, mode)
            code, summary = run(pool_mode, driver, args.pytest_args, settings)
            results.append((mode, driver, code, summary))
    print("\n=== behind PgBouncer")
    for mode, driver, code, summary in results:
        print(f"{mode:<12} {driver:<9} exit {code}: {summary}")
    return max(result[2] for result in results)


if __name__ == "__main__":
    sys.exit(main())
