"""A process that exits closes the idle connections it opened, as stock does.

A server session whose client leaves without a goodbye ends as an aborted
connection: MariaDB counts it in ``Aborted_clients`` (and logs "Aborted
connection"), PostgreSQL in ``pg_stat_database.sessions_abandoned``. A
``multiprocessing`` child (a worker of ``manage.py test --parallel`` or of a
``multiprocessing.Pool``) leaves with ``os._exit()``, which frees nothing: its
pooled connections, idle once given back, must be closed before that.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.server import STOCK_ENGINE, VENDOR, Observer

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.direct_server(reason="reads the server's own counters"),
]

ROOT = Path(__file__).resolve().parent.parent

#: A program whose multiprocessing children each check out a connection,
#: give it back and exit; it prints their server session ids.
PROGRAM = """
import json, multiprocessing, os, sys
import django
from django.conf import settings
from tests.settings import DATABASES
database = dict(DATABASES["default"], NAME=os.environ["EXIT_TEST_NAME"])
pooled = os.environ["EXIT_TEST_ENGINE"].startswith("django_sapool")
if not pooled:
    database["OPTIONS"] = {}
database["ENGINE"] = os.environ["EXIT_TEST_ENGINE"]
settings.configure(DATABASES={"default": database}, USE_TZ=True)
django.setup()
from django.db import connection

def child(queue):
    with connection.cursor() as cursor:
        cursor.execute(sys.argv[1])
        queue.put(int(cursor.fetchone()[0]))
    connection.close()  # the end of a request: back to the pool

context = multiprocessing.get_context("fork")
queue = context.Queue()
with connection.cursor() as cursor:  # the parent has a pool too
    cursor.execute(sys.argv[1])
    parent = int(cursor.fetchone()[0])
connection.close()
ids = []
for _ in range(2):
    process = context.Process(target=child, args=(queue,))
    process.start()
    ids.append(queue.get(timeout=30))
    process.join(30)
    assert process.exitcode == 0, process.exitcode
with connection.cursor() as cursor:
    cursor.execute(sys.argv[1])
    again = int(cursor.fetchone()[0])
connection.close()
if pooled:  # the children left the parent's pooled connection alone
    assert again == parent, (again, parent)
print(json.dumps([parent, *ids]))
"""


def aborted_so_far(observer: Observer) -> int:
    """Sessions the server saw end without a goodbye."""
    if VENDOR == "postgresql":
        observer.rows("SELECT pg_stat_clear_snapshot()")
        return int(
            observer.value(
                "SELECT sessions_abandoned FROM pg_stat_database WHERE datname = %s",
                [observer.wrapper.settings_dict["NAME"]],
            )
        )
    return int(observer.rows("SHOW GLOBAL STATUS LIKE 'Aborted_clients'")[0][1])


def run_program(engine: str, observer: Observer) -> int:
    """Run PROGRAM; how many sessions ended aborted meanwhile."""
    before = aborted_so_far(observer)
    sql = (
        "SELECT pg_backend_pid()"
        if VENDOR == "postgresql"
        else "SELECT CONNECTION_ID()"
    )
    env = {
        **os.environ,
        "EXIT_TEST_ENGINE": engine,
        "EXIT_TEST_NAME": observer.wrapper.settings_dict["NAME"],
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])
        ),
    }
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, sql],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    sessions: list[int] = json.loads(done.stdout)
    assert len(set(sessions)) == 3
    # PostgreSQL counts an abandoned session before it leaves pg_stat_activity.
    observer.wait_gone(sessions)
    return aborted_so_far(observer) - before


@pytest.mark.faults
@pytest.mark.parametrize("engine", ["stock", "sapool"])
def test_multiprocessing_children_close_their_connections_at_exit(
    engine: str, observer: Observer
) -> None:
    name = STOCK_ENGINE if engine == "stock" else _pooled_engine()
    # Aborted_clients counts the whole server's sessions (other clients may
    # abort meanwhile); a pool that leaves its connections open aborts two
    # every time, so one clean run of three is the proof.
    aborted: list[int] = []
    for _ in range(3):
        aborted.append(run_program(name, observer))
        if aborted[-1] == 0:
            break
    print(f"\n[fault] multiprocessing children exit ({engine}): aborted={aborted}")
    assert aborted[-1] == 0, f"sessions aborted per run: {aborted}"


def _pooled_engine() -> str:
    from django.db import connections

    engine: Any = connections["default"].settings_dict["ENGINE"]
    return str(engine)
