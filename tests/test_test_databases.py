"""Django's test runner creates, clones and destroys test databases through our ENGINE.

``DROP DATABASE`` fails while pooled sessions to the database are open, and
PostgreSQL's ``CREATE DATABASE ... TEMPLATE`` (the --parallel clone) fails
while the template has sessions. Each run is a real ``manage.py test``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import VENDOR, Observer

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.direct_server(
        reason=(
            "DROP DATABASE and CREATE DATABASE ... TEMPLATE fail while PgBouncer "
            "keeps server connections to the database"
        )
    ),
]

ROOT = Path(__file__).resolve().parent.parent
# Beside this run's own test database, so that runs sharing a server (say,
# SAPOOL_TEST_DB_NAME=test_a and =test_b) do not drop each other's.
TEST_DB = os.environ.get("SAPOOL_TEST_DB_NAME", "test_sapool") + "_runner"


def run_django_tests(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SAPOOL_TEST_DB_NAME": TEST_DB, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "django",
            "test",
            "tests.testapp.runner_cases",
            "--settings=tests.settings",
            "--noinput",
            "-v",
            "2",
            *args,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def existing_test_databases(observer: Observer) -> set[str]:
    if VENDOR == "postgresql":
        sql = "SELECT datname FROM pg_database WHERE datname LIKE %s"
    else:
        sql = (
            "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA "
            "WHERE SCHEMA_NAME LIKE %s"
        )
    return {row[0] for row in observer.rows(sql, [TEST_DB + "%"])}


@pytest.fixture
def clean(observer: Observer) -> Iterator[None]:
    yield
    for name in existing_test_databases(observer):
        quote = '"' if VENDOR == "postgresql" else "`"
        observer.rows(f"DROP DATABASE {quote}{name}{quote}")


def passed(result: subprocess.CompletedProcess[str]) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Ran 3 tests" in output, output
    assert "OK" in output, output
    return output


@pytest.mark.usefixtures("clean")
def test_create_and_destroy(observer: Observer) -> None:
    passed(run_django_tests())
    assert existing_test_databases(observer) == set(), (
        "destroyed, with no session holding it"
    )


@pytest.mark.usefixtures("clean")
def test_parallel_clones(observer: Observer) -> None:
    output = passed(run_django_tests("--parallel", "2"))
    assert "Cloning test database" in output
    assert existing_test_databases(observer) == set()


@pytest.mark.usefixtures("clean")
def test_keepdb_twice(observer: Observer) -> None:
    passed(run_django_tests("--keepdb"))
    assert existing_test_databases(observer) == {TEST_DB}
    output = passed(run_django_tests("--keepdb", "--parallel", "2"))
    assert "Using existing test database" in output
    # Django keeps the clones too with --keepdb.
    assert existing_test_databases(observer) == {
        TEST_DB,
        f"{TEST_DB}_1",
        f"{TEST_DB}_2",
    }
